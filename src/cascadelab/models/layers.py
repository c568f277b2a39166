"""Layers shared by the decoder-only models: RMSNorm, RoPE tables, rotary self-attention and the pre-norm layer."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers.cache_utils import Cache


class RMSNorm(nn.Module):
    """Root-mean-square layer norm with a learned scale."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise the last dimension to unit RMS (in float32), then scale."""
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(x.dtype)


def rope_cos_sin(position_ids: torch.Tensor, dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """RoPE tables for positions (B, T): cos, sin of shape (B, T, dim) in rotate-half layout."""
    inv_freq = 1.0 / theta ** (torch.arange(0, dim, 2, device=position_ids.device, dtype=torch.float32) / dim)
    freqs = position_ids.float()[..., None] * inv_freq
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


def default_position_ids(
    attention_mask: torch.Tensor | None, past_len: int, batch: int, seqlen: int, device: torch.device
) -> torch.Tensor:
    """Positions (B, T) of the new tokens when none are given.

    With a mask they count real tokens, so left padding does not shift them (generation); without one
    they run on from the cache's length.
    """
    if attention_mask is not None:
        return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, -seqlen:]
    return torch.arange(past_len, past_len + seqlen, device=device)[None].expand(batch, seqlen)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """Rotate the two halves of the last dimension: (x1, x2) -> (-x2, x1)."""
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


@dataclass
class AttentionInputs:
    """What every rotary attention layer of one forward reads besides the hidden states."""

    cos_sin: tuple[torch.Tensor, torch.Tensor]  # RoPE tables broadcasting against (B, H, T, head_dim)
    mask: torch.Tensor  # (B, 1, T, S) boolean, True where attention is allowed
    cache: Cache | None


class RotaryCausalSelfAttention(nn.Module):
    """Multi-head self-attention with rotary positions and an optional KV cache (no biases, q/k/v/o projections)."""

    def __init__(self, hidden_size: int, num_heads: int, layer_idx: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.layer_idx = layer_idx
        self.q_proj = nn.Linear(hidden_size, hidden_size, bias=False)
        self.k_proj = nn.Linear(hidden_size, hidden_size, bias=False)
        self.v_proj = nn.Linear(hidden_size, hidden_size, bias=False)
        self.o_proj = nn.Linear(hidden_size, hidden_size, bias=False)

    def forward(self, x: torch.Tensor, inputs: AttentionInputs) -> torch.Tensor:
        """Attend over the cached and current keys of ``x`` (B, T, D)."""
        cos, sin = inputs.cos_sin
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, T, hd)
        k = self.k_proj(x).view(b, t, self.num_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.num_heads, self.head_dim).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        if inputs.cache is not None:
            k, v = inputs.cache.update(k, v, self.layer_idx)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=inputs.mask)
        return self.o_proj(y.transpose(1, 2).reshape(b, t, -1))


class RotaryDecoderLayer(nn.Module):
    """Pre-norm decoder layer: ``x + attn(norm(x))``, then ``x + mlp(norm(x), *mlp_args)``; families bring the MLP."""

    def __init__(self, hidden_size: int, num_heads: int, eps: float, layer_idx: int, mlp: nn.Module) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(hidden_size, eps)
        self.self_attn = RotaryCausalSelfAttention(hidden_size, num_heads, layer_idx)
        self.post_attention_layernorm = RMSNorm(hidden_size, eps)
        self.mlp = mlp

    def forward(self, x: torch.Tensor, inputs: AttentionInputs, *mlp_args: torch.Tensor | None) -> torch.Tensor:
        """Residual attention then residual MLP; ``mlp_args`` go to the MLP after its input."""
        x = x + self.self_attn(self.input_layernorm(x), inputs)
        return x + self.mlp(self.post_attention_layernorm(x), *mlp_args)


__all__ = [
    "AttentionInputs",
    "RMSNorm",
    "RotaryCausalSelfAttention",
    "RotaryDecoderLayer",
    "default_position_ids",
    "rope_cos_sin",
    "rotate_half",
]
