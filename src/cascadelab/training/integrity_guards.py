"""Integrity guards of the SIGMA loop: non-finite steps, and loss spikes.

Per step, :meth:`IntegrityGuards.check` looks at the loss and the gradient norm before the optimizer
steps and returns what the loop must do:

- ``"step"``: a finite, ordinary step;
- ``"skip"``: the loss or the gradient is not finite: the update is dropped and counted;
- ``"restore"``: the `nonfinite_restore_after`-th non-finite step in a row: restore the last good state;
- ``"rollback"``: the loss exceeds `spike_factor` x the running median of the last `spike_window`
  good losses: restore the last good state and multiply the learning rate by `spike_lr_factor`.

:class:`GoodState` keeps that last good state (model, optimizers, schedulers) in memory, taken every
`snapshot_steps` ordinary steps. The hidden-eval manifest that trainers check at start lives in
:mod:`cascadelab.data.hidden_eval` (written by `prepare`).
"""

from __future__ import annotations

import copy
import math
import statistics
from collections import deque
from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import nn

Verdict = Literal["step", "skip", "restore", "rollback"]


class IntegrityGuards:
    """Decides, step by step, whether an update is applied, skipped, restored or rolled back; counts each."""

    def __init__(self, nonfinite_restore_after: int = 3, spike_factor: float = 5.0, spike_window: int = 50) -> None:
        self.nonfinite_restore_after = nonfinite_restore_after
        self.spike_factor = spike_factor
        self.recent: deque[float] = deque(maxlen=spike_window)
        self.nonfinite_in_a_row = 0
        self.counts = {"checks": 0, "nonfinite_skips": 0, "restores": 0, "spike_rollbacks": 0}

    def check(self, loss: float, grad_norm: float) -> Verdict:
        """The verdict for a step whose loss and (pre-clip) gradient norm are given."""
        self.counts["checks"] += 1
        if not (math.isfinite(loss) and math.isfinite(grad_norm)):
            self.counts["nonfinite_skips"] += 1
            self.nonfinite_in_a_row += 1
            if self.nonfinite_in_a_row >= self.nonfinite_restore_after:
                self.nonfinite_in_a_row = 0
                self.counts["restores"] += 1
                return "restore"
            return "skip"
        self.nonfinite_in_a_row = 0
        if len(self.recent) == self.recent.maxlen and loss > self.spike_factor * statistics.median(self.recent):
            self.counts["spike_rollbacks"] += 1
            return "rollback"
        self.recent.append(loss)
        return "step"

    def state_dict(self) -> dict[str, Any]:
        """Counters and the running window (to resume)."""
        return {"recent": list(self.recent), "in_a_row": self.nonfinite_in_a_row, "counts": dict(self.counts)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`state_dict`."""
        self.recent.clear()
        self.recent.extend(state["recent"])
        self.nonfinite_in_a_row = int(state["in_a_row"])
        self.counts = dict(state["counts"])


class GoodState:
    """An in-memory copy of the model, optimizers and schedulers at the last good step."""

    def __init__(self) -> None:
        self.state: dict[str, Any] | None = None
        self.step = 0

    def take(
        self,
        step: int,
        model: nn.Module,
        optimizers: Sequence[torch.optim.Optimizer],
        schedulers: Sequence[Any],
    ) -> None:
        """Remember the current state as the last good one."""
        self.step = step
        self.state = copy.deepcopy(
            {
                "model": model.state_dict(),
                "optimizers": [o.state_dict() for o in optimizers],
                "schedulers": [s.state_dict() for s in schedulers],
            }
        )

    def restore(self, model: nn.Module, optimizers: Sequence[torch.optim.Optimizer], schedulers: Sequence[Any]) -> int:
        """Load the remembered state back (schedulers keep their position); returns its step."""
        if self.state is None:
            raise RuntimeError("no good state to restore")
        model.load_state_dict(self.state["model"])
        for optimizer, saved in zip(optimizers, self.state["optimizers"], strict=True):
            optimizer.load_state_dict(copy.deepcopy(saved))
        return self.step


def scale_learning_rate(schedulers: Sequence[Any], factor: float) -> None:
    """Multiply the base learning rate of every LambdaLR scheduler (and the current lr) by `factor`."""
    for scheduler in schedulers:
        scheduler.base_lrs = [lr * factor for lr in scheduler.base_lrs]
        for group in scheduler.optimizer.param_groups:
            group["lr"] *= factor
