"""Model-agnostic helpers: moving models and batches to a device, counting parameters."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar, cast

import torch
from torch import nn


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of (trainable) parameters, counting tied tensors once."""
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) in seen or (trainable_only and not p.requires_grad):
            continue
        seen.add(id(p))
        total += p.numel()
    return total


ModuleT = TypeVar("ModuleT", bound=nn.Module)


def to_device(model: ModuleT, device: torch.device | str, dtype: torch.dtype | None = None) -> ModuleT:
    """``model.to(device, dtype)`` in place, typed (PreTrainedModel.to's decorator hides its signature)."""
    cast(nn.Module, model).to(device=device, dtype=dtype)
    return model


def batch_to_device(batch: Mapping[str, torch.Tensor], device: torch.device | str) -> dict[str, torch.Tensor]:
    """Move a batch dict (input_ids, attention_mask, labels) to ``device``; require ids and labels."""
    for key in ("input_ids", "labels"):
        if key not in batch:
            raise ValueError(f"batch: missing '{key}' (need input_ids, labels and optionally attention_mask)")
    return {k: v.to(device) for k, v in batch.items() if k in ("input_ids", "attention_mask", "labels")}


__all__ = ["batch_to_device", "count_parameters", "to_device"]
