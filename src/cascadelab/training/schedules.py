"""Learning-rate schedules, written once: multipliers of the peak rate before optimizer step `step` (0-based).

`GroupRateSchedule` is the scheduler for optimizers whose param groups each scale one rate (`lr_mult`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

Schedule = Callable[[int], float]


def constant_schedule(step: int) -> float:
    """The peak rate at every step: the multiplier 1."""
    return 1.0


def warmup_factor(step: int, warmup_steps: int) -> float:
    """Linear warm-up over `warmup_steps` (0: none), then constant 1."""
    return min(1.0, (step + 1) / warmup_steps) if warmup_steps else 1.0


def wsd_factor(step: int, max_steps: int, warmup_steps: int, decay_fraction: float) -> float:
    """Warmup-stable-decay multiplier of the learning rate before optimizer step `step` (0-based).

    Linear warm-up over `warmup_steps`, constant, then linear decay to 0 over the last
    `decay_fraction` of `max_steps` (the coarse SFT schedule).
    """
    if warmup_steps and step < warmup_steps:
        return warmup_factor(step, warmup_steps)
    return decay_factor(step, max_steps, decay_fraction)


def decay_factor(step: int, max_steps: int, decay_fraction: float) -> float:
    """1, then linear decay to 0 over the last `decay_fraction` of `max_steps`."""
    decay_steps = int(max_steps * decay_fraction)
    if decay_steps and step >= max_steps - decay_steps:
        return max(0.0, (max_steps - step) / decay_steps)
    return 1.0


def wsd_schedule(max_steps: int, warmup_steps: int, decay_fraction: float) -> Schedule:
    """`wsd_factor` with its settings bound: the multiplier as a function of the step alone."""
    return lambda step: wsd_factor(step, max_steps, warmup_steps, decay_fraction)


def lambda_schedulers(
    optimizers: list[torch.optim.Optimizer], schedule: Schedule
) -> list[torch.optim.lr_scheduler.LambdaLR]:
    """One `LambdaLR` per optimizer, each multiplying its initial rates by `schedule(step)`."""
    return [torch.optim.lr_scheduler.LambdaLR(optimizer, schedule) for optimizer in optimizers]


class GroupRateSchedule(torch.optim.lr_scheduler.LRScheduler):
    """Sets every param group's rate to `rate(step) × group["lr_mult"]` (1 without one) before optimizer step `step`.

    `rate` gives the rate itself (not a multiplier of the initial rates) of the 0-based step; the count starts at
    `start_step`, so the schedule of a rebuilt optimizer goes on where the last one stood. A group's `lr_mult` may
    change between steps: `seek` applies it at once.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, rate: Schedule, start_step: int = 0) -> None:
        self.rate = rate
        self.start_step = start_step
        super().__init__(optimizer)

    @property
    def position(self) -> int:
        """The 0-based step whose rates the param groups hold."""
        return self.start_step + self.last_epoch

    def get_lr(self) -> list[float | torch.Tensor]:
        """The rates of every param group at `position`."""
        base = self.rate(self.position)
        return [base * group.get("lr_mult", 1.0) for group in self.optimizer.param_groups]

    def seek(self, step: int) -> None:
        """Move to the 0-based `step` and set the param groups' rates for it (with their current `lr_mult`)."""
        self.last_epoch = step - self.start_step
        rates = self.get_lr()
        for group, lr in zip(self.optimizer.param_groups, rates, strict=True):
            group["lr"] = lr
        self._last_lr = rates

    def state_dict(self) -> dict[str, Any]:
        """The position (the `rate` function is code, not state)."""
        return {key: value for key, value in super().state_dict().items() if key != "rate"}
