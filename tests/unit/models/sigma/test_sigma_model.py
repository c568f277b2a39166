"""SigmaForCausalLM: cached generation, padding, save/load, INSTANT plan, feature counters, learning."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from cascadelab.models.sigma import (
    INSTANT_MISSING,
    BitLinear,
    SigmaConfig,
    SigmaForCausalLM,
    apply_instant_plan,
    chunked_cross_entropy,
)


def tiny_model(seed: int = 0, **overrides: object) -> SigmaForCausalLM:
    torch.manual_seed(seed)
    return SigmaForCausalLM(SigmaConfig.from_preset("tiny", **overrides))


def test_cached_generation_equals_uncached_greedy_decoding() -> None:
    model = tiny_model(mamba_ratio=2, attention_ratio=1, num_hidden_layers=3).eval()
    prompt = torch.randint(3, 64, (2, 6))
    generated = model.generate(prompt, max_new_tokens=8, do_sample=False)
    with torch.no_grad():
        seq = prompt
        for _ in range(8):
            nxt = model(seq, use_cache=False).logits[:, -1].argmax(-1, keepdim=True)
            seq = torch.cat([seq, nxt], 1)
    assert torch.equal(generated, seq)


def test_left_padded_batch_matches_unpadded_rows() -> None:
    model = tiny_model().eval()
    short = torch.randint(3, 64, (1, 4))
    ids = torch.cat([torch.zeros(1, 3, dtype=torch.long), short], 1)
    mask = torch.tensor([[0, 0, 0, 1, 1, 1, 1]])
    with torch.no_grad():
        padded = model(ids, attention_mask=mask).logits[:, 3:]
        alone = model(short).logits
    torch.testing.assert_close(padded, alone, atol=1e-5, rtol=1e-5)
    out = model.generate(ids, attention_mask=mask, max_new_tokens=4, do_sample=False)
    assert torch.equal(out[:, 3:], model.generate(short, max_new_tokens=4, do_sample=False))


def test_save_load_round_trip_gives_identical_logits(tmp_path: Path) -> None:
    model = tiny_model(bitlinear_families=["mamba_out", "moe_routed"]).eval()
    for block in model.model.layers:  # balancing state is part of the checkpoint
        if hasattr(block.ffn, "router"):
            block.ffn.router.e_score_correction_bias.fill_(0.25)
    ids = torch.randint(3, 64, (2, 9))
    model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert isinstance(loaded, SigmaForCausalLM)
    assert isinstance(loaded.model.layers[0].mixer.out_proj, BitLinear)
    assert loaded.lm_head.weight.data_ptr() == loaded.model.embed_tokens.weight.data_ptr()
    with torch.no_grad():
        assert torch.equal(model(ids).logits, loaded(ids).logits)


def test_training_forward_without_instant_plan_fails_clearly() -> None:
    model = tiny_model().train()
    ids = torch.randint(3, 64, (2, 8))
    with pytest.raises(RuntimeError) as err:
        model(ids, labels=ids)
    assert str(err.value) == INSTANT_MISSING
    assert model.enabled_features()["instant"] is False
    assert model.enabled_features()["triton"] is False  # CPU
    model(ids)  # a training-mode forward without labels is allowed
    with pytest.raises(ValueError, match="chunk_size must be > 0"):
        apply_instant_plan(model, 0)


def test_instant_loss_and_gradients_equal_the_plain_ones() -> None:
    ids = torch.randint(3, 64, (3, 10))
    labels = ids.clone()
    labels[0, :4] = -100
    plain = tiny_model(moe_aux_loss_coef=0.0).eval()  # eval: plain logits + HF loss
    instant = tiny_model(moe_aux_loss_coef=0.0)
    apply_instant_plan(instant, chunk_size=7)
    instant.train()
    loss_plain = plain(ids, labels=labels).loss
    out = instant(ids, labels=labels)
    assert out.logits is None
    torch.testing.assert_close(out.loss, loss_plain, atol=1e-5, rtol=1e-5)
    loss_plain.backward()
    out.loss.backward()
    for (name, a), b in zip(plain.named_parameters(), instant.parameters(), strict=True):
        if a.grad is not None:
            torch.testing.assert_close(b.grad, a.grad, atol=1e-5, rtol=1e-4, msg=name)
    counts = instant.feature_calls
    assert counts["instant"] == 1 and counts["mamba"] == 1 and counts["mla"] == 1  # recompute not counted
    assert counts["diff_attn"] == 1 and counts["moe"] == 2 and counts["triton"] == 0


def test_chunked_cross_entropy_equals_full_cross_entropy() -> None:
    gen = torch.Generator().manual_seed(0)
    hidden, weight = torch.randn(13, 6, generator=gen), torch.randn(9, 6, generator=gen)
    labels = torch.randint(0, 9, (13,), generator=gen)
    labels[3] = -100
    want = torch.nn.functional.cross_entropy(hidden @ weight.t(), labels, ignore_index=-100, reduction="sum")
    torch.testing.assert_close(chunked_cross_entropy(hidden, weight, labels, chunk_size=4), want)


def test_bitlinear_families_select_projections_and_count_calls() -> None:
    model = tiny_model(bitlinear_families=["mla_q", "moe_shared"]).eval()
    mla = model.model.layers[1].mixer
    assert isinstance(mla.q_proj, BitLinear) and not isinstance(mla.o_proj, BitLinear)
    with torch.no_grad():
        model(torch.randint(3, 64, (1, 5)))
    assert model.feature_calls["bitlinear"] == 1 + 2 * 2  # q_proj + shared experts' two projections, 2 blocks


def test_tiny_sigma_loss_falls_over_thirty_steps() -> None:
    model = tiny_model(seed=1, vocab_size=16)
    apply_instant_plan(model, chunk_size=64)
    model.train()
    gen = torch.Generator().manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    # a learnable pattern: each sequence counts up by one from a random start
    start = torch.randint(0, 8, (16, 1), generator=gen)
    ids = (start + torch.arange(12)) % 16
    losses = []
    for _ in range(30):
        loss = model(ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    assert model.routing_stats()["layer0/load_max_over_mean"] >= 1.0


def test_disabled_features_are_not_counted() -> None:
    model = tiny_model(moe_num_routed_experts=0, use_diff_attn=False).eval()
    with torch.no_grad():
        model(torch.randint(3, 64, (1, 5)))
    counts = model.feature_calls
    assert counts["mamba"] == 1 and counts["mla"] == 1
    assert counts["moe"] == 0 and counts["diff_attn"] == 0 and counts["bitlinear"] == 0
    assert model.enabled_features()["moe"] is False
