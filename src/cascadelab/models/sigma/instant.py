"""INSTANT, the SIGMA training memory plan: per-block activation checkpointing + chunked cross-entropy.

The training code applies it once, before the first forward::

    model = SigmaForCausalLM(config)
    apply_instant_plan(model, chunk_size=1024)

A :class:`SigmaForCausalLM` in training mode refuses a forward with labels until the plan is applied
(the seed's rule: SigmaLLM requires the INSTANT patch before ``forward``). With the plan, each block's
activations are recomputed in backward instead of stored, and the loss never materialises the
(tokens x vocab) logits: they are produced, consumed and recomputed ``chunk_size`` tokens at a time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from cascadelab.models.sigma.features import FeatureCalls

INSTANT_MISSING = (
    "SigmaForCausalLM: a training forward with labels needs the INSTANT memory plan; "
    "call cascadelab.models.sigma.apply_instant_plan(model, chunk_size) before the first forward"
)


@dataclass(frozen=True)
class InstantPlan:
    """Settings of the applied plan: cross-entropy chunk (tokens) and whether blocks are checkpointed."""

    chunk_size: int
    checkpoint_blocks: bool = True


def apply_instant_plan(model: Any, chunk_size: int = 1024, checkpoint_blocks: bool = True) -> Any:
    """Enable INSTANT on a SigmaForCausalLM (in place) and return it.

    ``checkpoint_blocks=False`` keeps the chunked loss but stores block activations: on a small CPU
    model that saves the ~30 % recomputation cost when memory is not the limit.
    """
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be > 0, got {chunk_size}")
    if not hasattr(model, "instant_plan") or not hasattr(model, "model"):
        raise ValueError(f"apply_instant_plan expects a SigmaForCausalLM, got {type(model).__name__}")
    model.instant_plan = InstantPlan(chunk_size, checkpoint_blocks)
    model.model.checkpoint_blocks = checkpoint_blocks
    return model


def checkpointed_call(fn: Callable[..., Any], features: FeatureCalls, *args: Any) -> Any:
    """Run ``fn(*args)`` under activation checkpointing; its recomputation is flagged on ``features``."""
    calls = [0]

    def run(*inner: Any) -> Any:
        calls[0] += 1
        with features.recompute(calls[0] > 1):
            return fn(*inner)

    return checkpoint(run, *args, use_reentrant=False)


def _chunk_loss(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    logits = F.linear(hidden, weight).float()
    return F.cross_entropy(logits, labels, ignore_index=-100, reduction="sum")


def chunked_cross_entropy(
    hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, chunk_size: int
) -> torch.Tensor:
    """Summed token cross-entropy of ``hidden @ weight.T`` against ``labels`` (-100 ignored), chunk by chunk.

    hidden (N, D), weight (V, D), labels (N,). Each chunk's logits are recomputed in backward, so peak
    memory holds one (chunk_size x V) block instead of (N x V).
    """
    total = hidden.new_zeros((), dtype=torch.float32)
    for start in range(0, hidden.shape[0], chunk_size):
        h, y = hidden[start : start + chunk_size], labels[start : start + chunk_size]
        if torch.is_grad_enabled():
            total = total + checkpoint(_chunk_loss, h, weight, y, use_reentrant=False)
        else:
            total = total + _chunk_loss(h, weight, y)
    return total
