"""Learning-rate schedules, written once: multipliers of the peak rate before optimizer step `step` (0-based)."""

from __future__ import annotations

from collections.abc import Callable

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
