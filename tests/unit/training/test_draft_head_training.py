"""Draft-head training: trained heads get drafts accepted; the frozen model is untouched; the loss masks."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F
from tests.unit.models.draft_helpers import distilled_batch, prompts, tiny_llama

from cascadelab.models.draft_heads import DraftHeads, SpeculativeStats, plain_greedy, speculative_greedy
from cascadelab.training.draft_heads import draft_loss, train_draft_heads


@pytest.fixture(autouse=True)
def _single_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def test_trained_heads_save_forwards_and_output_is_unchanged() -> None:
    model = tiny_llama()
    heads = DraftHeads.for_model(model, num_heads=3)
    batch = distilled_batch(model)
    losses = train_draft_heads(model, heads, [batch[:16], batch[16:]], steps=60, lr=3e-3, seed=0)
    assert len(losses) == 60 and losses[-1] < losses[0]
    stats = SpeculativeStats()
    for prompt in prompts(6, seed=5):
        assert speculative_greedy(model, heads, prompt, 24, stats=stats) == plain_greedy(model, prompt, 24)
    assert 0.0 < stats.acceptance_rate <= 1.0
    assert stats.tokens_per_forward > 1.0  # fewer forwards than plain greedy's one per token
    assert stats.tokens == 6 * 24
    assert stats.forwards < 6 * 24


def test_training_heads_leaves_the_frozen_model_untouched_and_is_seeded() -> None:
    model = tiny_llama().train()
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


def test_draft_loss_needs_long_enough_sequences() -> None:
    model = tiny_llama()
    with pytest.raises(ValueError, match="have no target for any head"):
        draft_loss(model, DraftHeads.for_model(model, 2), torch.tensor([[1, 2]]))


def test_a_target_mask_restricts_the_loss_to_the_marked_tokens() -> None:
    model = tiny_llama()
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
