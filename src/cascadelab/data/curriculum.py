"""A two-phase sampling curriculum: easy families alone first, then the full mix.

STACK-NOTES (coarse recipe): 2-digit add/sub sits on a plateau and escapes late and stochastically;
training add+sub alone until the loss falls below a threshold (capped at a share of the steps), then
switching to the full mix, made the escape happen on 4 of 4 seeds.

The switch is decided by the (deterministic) training loss at a logging step `s`, and takes effect at
batch `s + SWITCH_LAG`: a fixed batch index rather than "whenever the data loader next asks", so a run
resumed from a checkpoint draws exactly the same batches as an uninterrupted one.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from torch.utils.data import Sampler

# Batches the data loader may have drawn ahead of the step being trained (accelerate prefetches one).
SWITCH_LAG = 4


class CurriculumState:
    """The step at which the mix phase was decided, and how far the sampler has drawn."""

    def __init__(self, switch_step: int | None = None) -> None:
        self.switch_step = switch_step
        self.batches_drawn = 0

    def mixing_at(self, batch_index: int) -> bool:
        """Whether batch `batch_index` is drawn from the full mix."""
        return self.switch_step is not None and batch_index >= self.switch_step + SWITCH_LAG

    def decide(self, step: int) -> None:
        """Start the mix phase after `step` (once); fails if the loader already drew past the lag."""
        if self.switch_step is not None:
            return
        if self.batches_drawn > step + SWITCH_LAG:
            raise RuntimeError(f"curriculum: loader drew {self.batches_drawn} batches by step {step}; raise SWITCH_LAG")
        self.switch_step = step


class CurriculumSampler(Sampler[int]):
    """Yields `num_samples` row indices: warm-up tasks by their mix weights, then every task by its weight.

    With `group_by_task`, each batch (`batch_size` consecutive indices) comes from one task: short add/sub
    batches are then not padded to the length of a word problem, which buys 2-3x more steps in the same
    time on CPU (STACK-NOTES, refiner: "one family per batch").
    """

    def __init__(
        self,
        tasks: Sequence[str],
        mix: Mapping[str, float],
        warmup_tasks: Sequence[str],
        num_samples: int,
        seed: int,
        state: CurriculumState,
        batch_size: int,
        group_by_task: bool = True,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size: must be >= 1 (got {batch_size})")
        self.pools: dict[str, list[int]] = {}
        for index, task in enumerate(tasks):
            self.pools.setdefault(task, []).append(index)
        missing = [task for task, weight in mix.items() if weight > 0 and task not in self.pools]
        if missing:
            raise ValueError(f"mix.{missing[0]}: no training rows for this task in the corpus")
        self.mix = {task: weight for task, weight in mix.items() if weight > 0}
        self.warmup = {task: self.mix.get(task, 1.0) for task in warmup_tasks if task in self.pools}
        if not self.warmup and state.switch_step is None:
            state.switch_step = -SWITCH_LAG  # nothing to warm up on: mix from the first batch
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.group_size = batch_size if group_by_task else 1
        self.seed = seed
        self.state = state

    def __len__(self) -> int:
        return self.num_samples

    def describe(self) -> dict[str, Any]:
        """What fixes the order of the indices besides the switch: seed, length, batching, weights."""
        settings = {
            "seed": self.seed,
            "num_samples": self.num_samples,
            "batch_size": self.batch_size,
            "group_size": self.group_size,
            "mix": self.mix,
            "warmup": self.warmup,
        }
        described: dict[str, Any] = json.loads(json.dumps(settings))
        return described

    def state_dict(self) -> dict[str, Any]:
        """The curriculum's switch step and the sampler's settings: with them a replay draws the same indices."""
        return {"switch_step": self.state.switch_step, "sampler": self.describe()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the switch step; KeyError for a state without it, ValueError for another sampler's state."""
        switch_step, saved = state["switch_step"], state["sampler"]
        now = self.describe()
        for key in sorted(set(now) | set(saved)):
            if saved.get(key) != now.get(key):
                raise ValueError(f"its sampler drew with {key} {saved.get(key)}, this run's with {now.get(key)}")
        self.state.switch_step = switch_step

    def __iter__(self) -> Iterator[int]:
        rng = random.Random(self.seed)
        task = ""
        for position in range(self.num_samples):
            batch = position // self.batch_size
            self.state.batches_drawn = batch + 1
            if position % self.group_size == 0:
                weights = self.mix if self.state.mixing_at(batch) else self.warmup
                task = rng.choices(list(weights), weights=list(weights.values()))[0]
            pool = self.pools[task]
            yield pool[rng.randrange(len(pool))]


class LoopCurriculum:
    """The curriculum in a plain PyTorch loop: `CurriculumSampler` batches, switched as in the SFT trainer.

    The switch is decided on a windowed training loss below `switch_loss`, or at `max_warmup_steps`.
    """

    def __init__(
        self,
        tasks: Sequence[str],
        mix: Mapping[str, float],
        warmup_tasks: Sequence[str],
        switch_loss: float,
        max_warmup_steps: int,
        max_steps: int,
        batch_size: int,
        seed: int,
        group_by_task: bool = True,
    ) -> None:
        self.state = CurriculumState()
        self.num_rows = len(tasks)
        self.batch_size = batch_size
        self.switch_loss = switch_loss
        self.max_warmup_steps = max_warmup_steps
        sampler = CurriculumSampler(
            tasks, mix, warmup_tasks, max_steps * batch_size, seed, self.state, batch_size, group_by_task
        )
        self._indices = iter(sampler)

    def next_batch(self) -> list[int]:
        """Row indices of the next training batch."""
        return [next(self._indices) for _ in range(self.batch_size)]

    def observe(self, step: int, window_loss: float | None) -> None:
        """After optimizer step `step`: switch on a low windowed loss (None: no window ended) or at the cap."""
        low = window_loss is not None and window_loss < self.switch_loss
        if low or step >= self.max_warmup_steps:
            self.state.decide(step)

    def mixing_at(self, step: int) -> bool:
        """Whether the batch of optimizer step `step` (1-based) came from the full mix."""
        return self.state.mixing_at(step - 1)
