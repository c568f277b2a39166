"""The LEGO confidence threshold: exit-head confidences and the threshold that routes a target share."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import torch
import torch.nn.functional as F

from cascadelab.models.lego.modeling_lego import IGNORE_INDEX, LEGOForCausalLM, shifted_targets
from cascadelab.models.utils import batch_to_device


def compute_confidence(
    model: LEGOForCausalLM, hidden_state: torch.Tensor, exit_layer: int | None = None
) -> torch.Tensor:
    """Max softmax probability of the exit head at ``exit_layer`` for exit-layer states (..., D)."""
    layer = model._resolve_exit_layer(exit_layer)
    logits = model.exit_logits(hidden_state.to(next(model.parameters()).dtype), layer)
    return F.softmax(logits.float(), dim=-1).max(dim=-1).values


@torch.no_grad()
def exit_confidences(
    model: LEGOForCausalLM,
    batches: Iterable[Mapping[str, torch.Tensor]],
    device: torch.device | str = "cpu",
    exit_layer: int | None = None,
) -> torch.Tensor:
    """Exit-layer confidences of every response token (labels != -100) in ``batches``, in order."""
    model.eval()
    out = []
    for raw in batches:
        batch = batch_to_device(raw, device)
        h = model.exit_hidden_states(batch["input_ids"], batch.get("attention_mask"), exit_layer)
        mask = shifted_targets(batch["labels"]) != IGNORE_INDEX
        out.append(compute_confidence(model, h[mask], exit_layer).cpu())
    return torch.cat(out) if out else torch.empty(0)


def threshold_for_ratio(confidences: torch.Tensor, target_ratio: float) -> float:
    """Threshold with ``round(target_ratio * n)`` of ``confidences`` strictly below it.

    The midpoint between the k-th and (k+1)-th smallest values, so the split is exact whenever those
    two differ; 0.0 when k = 0 and just above the maximum when k = n. The result is a float32 value,
    so comparing it with float32 or float64 confidences gives the same split.
    """
    if not 0.0 <= target_ratio <= 1.0:
        raise ValueError(f"target_ratio: must be in [0, 1], got {target_ratio}")
    n = confidences.numel()
    if n == 0:
        raise ValueError("confidences: no response tokens to calibrate the threshold on")
    values = confidences.float().flatten().sort().values
    k = round(target_ratio * n)
    if k == 0:
        return 0.0
    if k == n:
        return float(torch.nextafter(values[-1], torch.tensor(math.inf)))
    lo, hi = values[k - 1], values[k]
    mid = ((lo.double() + hi.double()) / 2).float()
    return float(mid if mid > lo else hi)


def compute_confidence_threshold(
    model: LEGOForCausalLM,
    val_batches: Iterable[Mapping[str, torch.Tensor]],
    target_ratio: float,
    device: torch.device | str = "cpu",
    exit_layer: int | None = None,
) -> float:
    """Confidence threshold below which ``target_ratio`` of the response tokens of ``val_batches`` fall."""
    return threshold_for_ratio(exit_confidences(model, val_batches, device, exit_layer), target_ratio)


__all__ = ["compute_confidence", "compute_confidence_threshold", "exit_confidences", "threshold_for_ratio"]
