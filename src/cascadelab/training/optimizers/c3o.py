"""C3O (credit-scaled orthogonal optimizer): Muon whose per-group step is scaled by a bounded credit.

C3O has no public definition; this is cascadelab's. The hidden matrices are split into groups (one
per decoder layer by default, see :func:`layer_groups`). Each group g has a credit c_g ∈ [c_min, c_max]
(initially 1) that multiplies its learning rate in the Muon update of :mod:`orthogonal`:

    W ← W (1 − η λ) − c_g · η · sqrt(max(1, rows / cols)) · O          (O = NS₅(Nesterov momentum))

Default credit signal — each group's measured contribution to the window's loss decrease. To first
order a step Δ_g = −c_g η a O changes the loss by ⟨G, Δ_g⟩, so the optimizer accumulates per group

    s_g += c_g η a ⟨G, O⟩          (the predicted loss decrease due to group g, summed over the window)

and at the end of each credit window (:meth:`C3O.update_credit`, called by the trainer) it sets

    r_g = max(s_g, 0) / mean_h max(s_h, 0)          (1 for every group when no group decreased the loss)
    c_g ← clip((1 − κ) c_g + κ r_g, c_min, c_max),   s_g ← 0

Groups whose updates bought more loss decrease get larger steps, the others smaller, within bounds.
An external signal (the RL issue's counterfactual credit) replaces it through :meth:`C3O.set_credit`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from cascadelab.training.optimizers.orthogonal import OrthogonalMomentum

_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")


def layer_groups(named: Iterable[tuple[str, nn.Parameter]]) -> dict[str, list[nn.Parameter]]:
    """Group parameters by decoder layer (`layer_<i>` from `...layers.<i>...`), the rest as `other`."""
    groups: dict[str, list[nn.Parameter]] = {}
    for name, p in named:
        match = _LAYER.search(name)
        groups.setdefault(f"layer_{match.group(1)}" if match else "other", []).append(p)
    return groups


def gain_shares(gains: Sequence[float]) -> list[float]:
    """r_g = max(s_g, 0) / mean_h max(s_h, 0): each group's share of the positive gains (all 1 when none)."""
    positive = [max(gain, 0.0) for gain in gains]
    mean = sum(positive) / len(positive) if positive else 0.0
    return [gain / mean if mean > 0 else 1.0 for gain in positive]


class C3O(OrthogonalMomentum):
    """Orthogonalised momentum with a bounded per-group credit multiplying each group's learning rate."""

    def __init__(
        self,
        params: Any,
        credit_min: float = 0.5,
        credit_max: float = 2.0,
        credit_ema: float = 0.5,
        **kwargs: Any,
    ) -> None:
        if not 0 < credit_min <= 1 <= credit_max:
            raise ValueError(f"need 0 < credit_min <= 1 <= credit_max, got {credit_min}, {credit_max}")
        if not 0 < credit_ema <= 1:
            raise ValueError(f"credit_ema must be in (0, 1], got {credit_ema}")
        super().__init__(params, credit=1.0, contribution=0.0, **kwargs)
        self.credit_min, self.credit_max, self.credit_ema = credit_min, credit_max, credit_ema
        self.credit_updates = 0

    def group_scale(self, group: dict[str, Any]) -> float:
        """The group's current credit c_g."""
        return float(group["credit"])

    def after_update(self, p: torch.Tensor, group: dict[str, Any], step: torch.Tensor, lr: float) -> None:
        """Accumulate the group's predicted loss decrease lr · ⟨G, step⟩."""
        assert p.grad is not None
        group["contribution"] += lr * float(torch.vdot(p.grad.flatten(), step.flatten()))

    def credits(self) -> dict[str, float]:
        """Current credit per group (keyed by the group's `name`, or its index)."""
        return {str(g.get("name", i)): float(g["credit"]) for i, g in enumerate(self.param_groups)}

    def update_credit(self) -> dict[str, float]:
        """End a credit window: move each credit toward its group's share of the loss decrease (bounded)."""
        shares = gain_shares([float(g["contribution"]) for g in self.param_groups])
        for group, share in zip(self.param_groups, shares, strict=True):
            blended = (1 - self.credit_ema) * float(group["credit"]) + self.credit_ema * share
            group["credit"] = min(max(blended, self.credit_min), self.credit_max)
            group["contribution"] = 0.0
        self.credit_updates += 1
        return self.credits()

    def set_credit(self, credit: Mapping[str, float]) -> None:
        """Replace the credit of the named groups (clipped to the bounds): the external-signal hook."""
        by_name = {str(g.get("name", i)): g for i, g in enumerate(self.param_groups)}
        for name, value in credit.items():
            if name not in by_name:
                raise KeyError(f"unknown C3O group {name!r}; known: {', '.join(by_name)}")
            by_name[name]["credit"] = min(max(float(value), self.credit_min), self.credit_max)
        self.credit_updates += 1
