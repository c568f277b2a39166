"""MLA with differential attention: λ = 0 reduces to standard attention; cached decoding equals full."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cascadelab.models.sigma import SigmaConfig, SigmaForCausalLM, differential_attention


def eager_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    scores = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5
    mask = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool).tril()
    return scores.masked_fill(~mask, float("-inf")).softmax(-1) @ v


def test_differential_attention_with_zero_lambda_is_standard_attention() -> None:
    gen = torch.Generator().manual_seed(0)
    q1, k1, q2, k2 = (torch.randn(2, 3, 7, 8, generator=gen) for _ in range(4))
    v = torch.randn(2, 3, 7, 5, generator=gen)
    out = differential_attention(q1, k1, q2, k2, v, 0.0, is_causal=True)
    torch.testing.assert_close(out, eager_attention(q1, k1, v), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q1, k1, v, is_causal=True))


def test_differential_attention_subtracts_the_second_map() -> None:
    gen = torch.Generator().manual_seed(1)
    q1, k1, q2, k2 = (torch.randn(1, 2, 6, 8, generator=gen) for _ in range(4))
    v = torch.randn(1, 2, 6, 4, generator=gen)
    out = differential_attention(q1, k1, q2, k2, v, 0.3, is_causal=True)
    torch.testing.assert_close(out, eager_attention(q1, k1, v) - 0.3 * eager_attention(q2, k2, v), atol=1e-5, rtol=1e-5)


def test_lambda_follows_the_reparameterisation() -> None:
    model = SigmaForCausalLM(SigmaConfig.from_preset("tiny"))
    attn = model.model.layers[1].mixer
    want = torch.exp(attn.lambda_q1 @ attn.lambda_k1) - torch.exp(attn.lambda_q2 @ attn.lambda_k2) + attn.lambda_init
    torch.testing.assert_close(attn.diff_lambda(), want)
    assert abs(attn.lambda_init - (0.8 - 0.6 * torch.exp(torch.tensor(-0.3)).item())) < 1e-6


def test_mla_cached_decoding_equals_full_forward() -> None:
    torch.manual_seed(0)
    config = SigmaConfig.from_preset("tiny", mamba_ratio=0, attention_ratio=1, q_lora_rank=8)
    model = SigmaForCausalLM(config).eval()
    ids = torch.randint(3, 64, (2, 11))
    with torch.no_grad():
        full = model(ids).logits
        out = model(ids[:, :6], use_cache=True)
        steps = [out.logits]
        for t in range(6, 11):
            out = model(ids[:, t : t + 1], past_key_values=out.past_key_values, use_cache=True)
            steps.append(out.logits)
    cache = out.past_key_values
    assert cache.layers[0].keys.shape == (2, 1, 11, config.kv_lora_rank)  # only the latent is cached
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-5)
