"""A two-phase sampling curriculum for SFT: easy families alone first, then the full mix.

STACK-NOTES (coarse recipe): 2-digit add/sub sits on a plateau and escapes late and stochastically;
training add+sub alone until the loss falls below a threshold (capped at a share of the steps), then
switching to the full mix, made the escape happen on 4 of 4 seeds. The switch depends only on the
(deterministic) training loss, so reruns with the same params are identical.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping, Sequence

from torch.utils.data import Sampler
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments


class CurriculumState:
    """Whether the mix phase has started, and at which step."""

    def __init__(self) -> None:
        self.switch_step: int | None = None

    @property
    def mixing(self) -> bool:
        """True once the full mix is being sampled."""
        return self.switch_step is not None


class CurriculumSampler(Sampler[int]):
    """Yields `num_samples` row indices: warm-up tasks by their mix weights, then every task by its weight.

    With `group_size` > 1, each consecutive run of `group_size` indices (one batch) comes from one task:
    short add/sub batches are then not padded to the length of a word problem, which buys 2-3x more
    steps in the same time on CPU (STACK-NOTES, refiner: "one family per batch").
    """

    def __init__(
        self,
        tasks: Sequence[str],
        mix: Mapping[str, float],
        warmup_tasks: Sequence[str],
        num_samples: int,
        seed: int,
        state: CurriculumState,
        group_size: int = 1,
    ) -> None:
        self.pools: dict[str, list[int]] = {}
        for index, task in enumerate(tasks):
            self.pools.setdefault(task, []).append(index)
        missing = [task for task, weight in mix.items() if weight > 0 and task not in self.pools]
        if missing:
            raise ValueError(f"mix.{missing[0]}: no training rows for this task in the corpus")
        self.mix = {task: weight for task, weight in mix.items() if weight > 0}
        self.warmup = {task: self.mix.get(task, 1.0) for task in warmup_tasks if task in self.pools}
        if not self.warmup:
            state.switch_step = 0
        if group_size < 1:
            raise ValueError(f"group_size: must be >= 1 (got {group_size})")
        self.num_samples = num_samples
        self.group_size = group_size
        self.seed = seed
        self.state = state

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        rng = random.Random(self.seed)
        task = ""
        for position in range(self.num_samples):
            if position % self.group_size == 0:
                weights = self.mix if self.state.mixing else self.warmup
                task = rng.choices(list(weights), weights=list(weights.values()))[0]
            pool = self.pools[task]
            yield pool[rng.randrange(len(pool))]


class CurriculumCallback(TrainerCallback):
    """Switches the sampler to the full mix when the logged loss falls below `switch_loss`, or at the cap."""

    def __init__(self, state: CurriculumState, switch_loss: float, max_warmup_steps: int) -> None:
        self.state = state
        self.switch_loss = switch_loss
        self.max_warmup_steps = max_warmup_steps

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict | None = None,
        **kwargs: object,
    ) -> None:
        """Switch on a low windowed training loss."""
        if not self.state.mixing and logs and "loss" in logs and logs["loss"] < self.switch_loss:
            self.state.switch_step = state.global_step

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: object
    ) -> None:
        """Switch at the warm-up cap."""
        if not self.state.mixing and state.global_step >= self.max_warmup_steps:
            self.state.switch_step = state.global_step
