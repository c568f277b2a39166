"""Draft heads: speculative greedy decoding equals plain greedy; trained heads get drafts accepted."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedModel

from cascadelab.models.draft_heads import (
    DraftHeads,
    SpeculativeStats,
    draft_loss,
    measure_speculative,
    plain_greedy,
    speculative_greedy,
    train_draft_heads,
)
from cascadelab.models.sigma import SigmaConfig, SigmaForCausalLM


@pytest.fixture(autouse=True)
def _single_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _tiny_llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=48,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=128,
        initializer_range=0.2,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(config).eval()


def _prompts(count: int, seed: int, vocab: int = 48) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(vocab) for _ in range(rng.randint(2, 6))] for _ in range(count)]


def _distilled_batch(model: PreTrainedModel) -> torch.Tensor:
    """The frozen model's own greedy continuations of 32 prompts, cut to one width."""
    sequences = [p + plain_greedy(model, p, 24) for p in _prompts(32, seed=1)]
    width = min(len(s) for s in sequences)
    return torch.tensor([s[:width] for s in sequences])


@pytest.mark.parametrize("max_new", [1, 2, 7, 20])
def test_untrained_heads_still_give_plain_greedy(max_new: int) -> None:
    model = _tiny_llama()
    heads = DraftHeads.for_model(model, num_heads=3)
    for prompt in _prompts(4, seed=2):
        assert speculative_greedy(model, heads, prompt, max_new) == plain_greedy(model, prompt, max_new)


def test_plain_greedy_matches_generate() -> None:
    model = _tiny_llama()
    prompt = [3, 14, 15, 9]
    generated = model.generate(torch.tensor([prompt]), max_new_tokens=12, do_sample=False, pad_token_id=0)
    assert generated[0, len(prompt) :].tolist() == plain_greedy(model, prompt, 12)


def test_trained_heads_save_forwards_and_output_is_unchanged() -> None:
    model = _tiny_llama()
    heads = DraftHeads.for_model(model, num_heads=3)
    batch = _distilled_batch(model)
    losses = train_draft_heads(model, heads, [batch[:16], batch[16:]], steps=60, lr=3e-3, seed=0)
    assert len(losses) == 60 and losses[-1] < losses[0]
    stats = SpeculativeStats()
    for prompt in _prompts(6, seed=5):
        assert speculative_greedy(model, heads, prompt, 24, stats=stats) == plain_greedy(model, prompt, 24)
    assert 0.0 < stats.acceptance_rate <= 1.0
    assert stats.tokens_per_forward > 1.0  # fewer forwards than plain greedy's one per token
    assert stats.tokens == 6 * 24
    assert stats.forwards < 6 * 24


def test_training_heads_leaves_the_frozen_model_untouched_and_is_seeded() -> None:
    model = _tiny_llama().train()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    batches = list(torch.randint(0, 48, (4, 8, 10), generator=torch.Generator().manual_seed(0)))
    first = train_draft_heads(model, DraftHeads.for_model(model, 2), batches, steps=6, lr=3e-3, seed=1)
    for name, p in model.named_parameters():
        assert torch.equal(p, before[name]), name
        assert p.requires_grad and p.grad is None, name
    assert model.training  # mode restored
    assert first == train_draft_heads(model, DraftHeads.for_model(model, 2), batches, steps=6, lr=3e-3, seed=1)
    assert first != train_draft_heads(model, DraftHeads.for_model(model, 2), batches, steps=6, lr=3e-3, seed=2)
    with pytest.raises(ValueError, match="need at least one batch and steps > 0"):
        train_draft_heads(model, DraftHeads.for_model(model, 2), [], steps=1, lr=1e-3, seed=0)


def test_measure_speculative_reports_identical_output_and_rates() -> None:
    model = _tiny_llama()
    heads = DraftHeads.for_model(model, num_heads=2)
    report = measure_speculative(model, heads, _prompts(3, seed=4), max_new_tokens=10)
    assert report["identical"] is True and report["mismatches"] == 0
    assert report["tokens"] == 30 and report["prompts"] == 3
    assert report["tokens_per_forward"] == pytest.approx(30 / report["forwards"])
    assert 0.0 <= report["acceptance_rate"] <= 1.0
    assert report["speedup"] == pytest.approx(report["plain_s"] / report["speculative_s"])


def test_eos_stops_both_decoders_at_the_same_token() -> None:
    model = _tiny_llama()
    heads = DraftHeads.for_model(model, num_heads=2)
    prompt = [5, 6, 7]
    reference = plain_greedy(model, prompt, 16)
    eos = reference[3]
    expected = plain_greedy(model, prompt, 16, eos_id=eos)
    assert expected[-1] == eos and len(expected) <= 4
    assert speculative_greedy(model, heads, prompt, 16, eos_id=eos) == expected


def test_works_on_the_tiny_sigma_model() -> None:
    torch.manual_seed(0)
    model = SigmaForCausalLM(SigmaConfig.from_preset("tiny")).eval()
    heads = DraftHeads.for_model(model, num_heads=2)
    prompt = [1, 2, 3, 4]
    assert speculative_greedy(model, heads, prompt, 10) == plain_greedy(model, prompt, 10)


def test_heads_need_a_positive_count_and_long_enough_sequences() -> None:
    with pytest.raises(ValueError, match="num_heads: must be > 0"):
        DraftHeads(8, 8, 0)
    model = _tiny_llama()
    with pytest.raises(ValueError, match="have no target for any head"):
        draft_loss(model, DraftHeads.for_model(model, 2), torch.tensor([[1, 2]]))


def test_a_target_mask_restricts_the_loss_to_the_marked_tokens() -> None:
    model = _tiny_llama()
    heads = DraftHeads.for_model(model, 2)
    ids = torch.randint(0, 48, (3, 9), generator=torch.Generator().manual_seed(0))
    everything = torch.ones_like(ids, dtype=torch.bool)
    assert torch.equal(draft_loss(model, heads, ids, everything), draft_loss(model, heads, ids))
    tail = torch.zeros_like(everything)
    tail[:, 7:] = True  # only the targets at positions 7 and 8 count
    with torch.no_grad():
        logits = heads(model.base_model(input_ids=ids).last_hidden_state)
        expected = torch.stack(
            [
                F.cross_entropy(logits[:, 7 - shift : 9 - shift, i].reshape(-1, 48), ids[:, 7:].reshape(-1))
                for i, shift in enumerate((2, 3))
            ]
        ).mean()
        assert torch.allclose(draft_loss(model, heads, ids, tail), expected)
    none = torch.zeros_like(everything)
    with pytest.raises(ValueError, match="have no target for any head"):
        draft_loss(model, heads, ids, none)
    with pytest.raises(ValueError, match="1 target masks for 2 batches"):
        train_draft_heads(model, heads, [ids, ids], steps=1, lr=1e-3, seed=0, target_masks=[tail])
    losses = train_draft_heads(model, heads, [ids], steps=3, lr=1e-3, seed=0, target_masks=[tail])
    assert len(losses) == 3
