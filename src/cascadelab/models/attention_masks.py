"""Attention masks shared by the causal models built here (LEGO, ACOC)."""

from __future__ import annotations

import torch


def causal_padding_mask(
    attention_mask: torch.Tensor | None, batch: int, q_len: int, past_len: int, device: torch.device
) -> torch.Tensor:
    """Boolean mask (B, 1, q_len, past_len + q_len): causal, padding-aware, diagonal always allowed."""
    kv_len = past_len + q_len
    q_pos = torch.arange(past_len, kv_len, device=device)[:, None]
    k_pos = torch.arange(kv_len, device=device)[None, :]
    mask = (k_pos <= q_pos)[None, None].expand(batch, 1, q_len, kv_len)
    if attention_mask is not None:
        keys = attention_mask[:, -kv_len:].bool()[:, None, None, :]
        # A query may always see itself: fully masked rows (left padding) would give NaN otherwise.
        mask = (mask & keys) | (k_pos == q_pos)[None, None]
    return mask
