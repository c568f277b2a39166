"""Compute to reach a loss: smoothed val-loss curves against FLOPs, and the speedup of one arm over another.

Speedup of an arm over the large static model L (Net2Net / bert2BERT / LEMON convention):
`1 − FLOPs_arm(L*) / FLOPs_L(L*)`, where `FLOPs_x(L*)` is the first point (linearly interpolated) at which
x's smoothed val loss reaches the target L*, and L* is L's smoothed val loss at a fixed fraction of the
budget (declared in params before the run). Smoothing is a trailing mean over a window of FLOPs (the same
window for every arm, so a large model, whose evaluations lie further apart in FLOPs, does not lag more than
a small one), so a curve reaches a loss only when it stays there on average (L's raw val loss jumps between
evaluations). An arm that never reaches L* has no speedup (None), which counts as no saving.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

Curve = Sequence[tuple[float, float]]  # (flops, val loss), flops increasing


def smooth(curve: Curve, window: float) -> list[tuple[float, float]]:
    """Trailing mean of the loss over the points within `window` FLOPs up to each point (itself included)."""
    if window < 0:
        raise ValueError(f"window: must be >= 0 FLOPs (got {window})")
    out = []
    for flops, _ in curve:
        values = [loss for x, loss in curve if flops - window <= x <= flops]
        out.append((flops, sum(values) / len(values)))
    return out


def loss_at(curve: Curve, flops: float) -> float:
    """The curve's loss at `flops` (linear between points; the end values beyond them)."""
    if not curve:
        raise ValueError("curve: no points")
    if flops <= curve[0][0]:
        return curve[0][1]
    for (x0, y0), (x1, y1) in itertools.pairwise(curve):
        if x0 <= flops <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (flops - x0) / (x1 - x0)
    return curve[-1][1]


def flops_to_reach(curve: Curve, target: float) -> float | None:
    """The first FLOPs at which the curve reaches `target` (interpolated), or None when it never does."""
    for i, (flops, loss) in enumerate(curve):
        if loss <= target:
            if i == 0:
                return flops
            x0, y0 = curve[i - 1]
            return x0 + (flops - x0) * (y0 - target) / (y0 - loss)
    return None


def target_loss(large: Curve, budget: float, fraction: float, window: float) -> float:
    """L*: the large model's smoothed val loss at `fraction` of the FLOP budget."""
    return loss_at(smooth(large, window), fraction * budget)


def speedup(arm: Curve, large: Curve, target: float, window: float) -> float | None:
    """1 − FLOPs_arm(target) / FLOPs_L(target) on smoothed curves; None when either never reaches it."""
    mine, theirs = flops_to_reach(smooth(arm, window), target), flops_to_reach(smooth(large, window), target)
    if mine is None or theirs is None or theirs <= 0:
        return None
    return 1.0 - mine / theirs
