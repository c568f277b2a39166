"""Counterfactual credit: how much each parameter group's last update changed a probe loss.

Counterfactual credit has no public definition; this is cascadelab's. The parameters are split into
named groups g (for C3O, one per decoder layer: :func:`~cascadelab.training.optimizers.c3o.layer_groups`).
Around one optimizer step the trainer calls `before_step` (snapshot θ_g⁻ of every group) and
`after_step` (θ_g now), which records the group's last update

    Δ_g = θ_g − θ_g⁻

On a small, fixed probe batch with loss L, `estimate` measures, for every group, the loss with that one
group's update reverted (the others kept) against the loss now:

    e_g = L(θ with θ_g := θ_g⁻) − L(θ)

so e_g > 0 means the update of g lowered the probe loss (it helped), e_g < 0 that it hurt, and e_g = 0 that
the probe loss does not depend on it. Reverting copies the snapshot back (no θ_g − Δ_g rounding), and
the current values are copied back afterwards, so the parameters are bit-identical after `estimate`.
One estimate costs 1 + G probe forwards and one extra copy of the parameters.

`to_c3o_credit` maps estimates to C3O credits with the same share rule as C3O's own credit window
(:func:`~cascadelab.training.optimizers.c3o.gain_shares`):

    r_g = max(e_g, 0) / mean_h max(e_h, 0)          (1 for every group when no update helped)
    c_g = clip(1 + κ (r_g − 1), c_min, c_max)

whose mean is 1 before clipping; κ (``strength``) ∈ (0, 1] damps the signal. `C3O.set_credit` takes the
result. `effective_calls` counts the estimates actually made.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from cascadelab.config import check_settings
from cascadelab.training.optimizers.c3o import gain_shares


@dataclass(frozen=True)
class CreditSettings:
    """Bounds and damping of the credit mapping (C3O's defaults: credits in [0.5, 2])."""

    credit_min: float = 0.5
    credit_max: float = 2.0
    strength: float = 1.0

    def __post_init__(self) -> None:
        if not 0 < self.credit_min <= 1 <= self.credit_max:
            raise ValueError(
                "counterfactual_credit: need 0 < credit_min <= 1 <= credit_max, "
                f"got {self.credit_min}, {self.credit_max}"
            )
        check_settings("counterfactual_credit", self, [("strength", 0 < self.strength <= 1, "in (0, 1]")])


class CounterfactualCredit:
    """Per-group counterfactual estimates of the last update's effect on a probe loss."""

    def __init__(
        self, groups: Mapping[str, Sequence[nn.Parameter]], settings: CreditSettings = CreditSettings()
    ) -> None:
        if not groups:
            raise ValueError("counterfactual_credit: no parameter groups")
        self.groups = {name: list(params) for name, params in groups.items()}
        self.settings = settings
        self._before: dict[str, list[torch.Tensor]] | None = None
        self._previous: dict[str, list[torch.Tensor]] | None = None  # θ_g⁻ of the last recorded step
        self.update_norms: dict[str, float] = {}
        self.effective_calls = 0

    def _snapshot(self) -> dict[str, list[torch.Tensor]]:
        return {name: [p.detach().clone() for p in params] for name, params in self.groups.items()}

    def before_step(self) -> None:
        """Snapshot every group's parameters (call just before `optimizer.step()`)."""
        self._before = self._snapshot()

    def after_step(self) -> None:
        """Record each group's update Δ_g since `before_step` (call just after `optimizer.step()`)."""
        if self._before is None:
            raise RuntimeError("counterfactual_credit: after_step() without before_step()")
        self._previous, self._before = self._before, None
        self.update_norms = {
            name: sum(float(((p.detach() - old) ** 2).sum()) for p, old in zip(params, olds, strict=True)) ** 0.5
            for (name, params), olds in zip(self.groups.items(), self._previous.values(), strict=True)
        }

    @property
    def has_update(self) -> bool:
        """Whether an update has been recorded (an estimate is possible)."""
        return self._previous is not None

    @torch.no_grad()
    def estimate(self, probe_loss: Callable[[], float]) -> dict[str, float]:
        """e_g = probe loss with group g's last update reverted − probe loss now; parameters restored exactly."""
        if self._previous is None:
            raise RuntimeError(
                "counterfactual_credit: no recorded update; call before_step() and after_step() around the step"
            )
        now = float(probe_loss())
        estimates: dict[str, float] = {}
        for name, params in self.groups.items():
            current = [p.detach().clone() for p in params]
            try:
                for p, old in zip(params, self._previous[name], strict=True):
                    p.copy_(old)
                estimates[name] = float(probe_loss()) - now
            finally:
                for p, value in zip(params, current, strict=True):
                    p.copy_(value)
        self.effective_calls += 1
        return estimates

    def to_c3o_credit(self, estimates: Mapping[str, float]) -> dict[str, float]:
        """Bounded credits c_g = clip(1 + κ (r_g − 1), c_min, c_max) for `C3O.set_credit`."""
        names = list(estimates)
        shares = gain_shares([float(estimates[name]) for name in names])
        s = self.settings
        return {
            name: min(max(1.0 + s.strength * (share - 1.0), s.credit_min), s.credit_max)
            for name, share in zip(names, shares, strict=True)
        }
