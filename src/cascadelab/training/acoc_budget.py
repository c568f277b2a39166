"""ACOC training on a training-FLOP budget: one run-long task schedule, FLOP metering, a val curve, WSD in FLOPs.

`BudgetEngine` is the cycle engine of `acoc_trainer` with three changes, so that arms of different sizes can
be compared at equal compute: every step draws its task from one schedule of the whole run (the same for
every arm of a seed, so step i sees the same batch in every arm); every step adds its analytic training
FLOPs (`models/acoc/flops.py`), a trainer callback records the val loss every `eval_every` steps and stops
the trainer at a FLOP mark; the learning rate warms up over steps and decays linearly to 0 over the last
`decay_fraction` of the FLOP budget (so every arm decays over the same compute). `grow` is G's
function-preserving growth: every expert of every layer split (Net2Net copy, router bias −log 2 per copy,
a tiny zero-sum noise), the Adam moments of each source copied to its clone, and a short linear re-warm-up;
with `decay_after_growth` the rate then also decays linearly to 0 from the growth to the end of the budget.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from cascadelab.config import ACOCParams
from cascadelab.data.batches import LMBatch
from cascadelab.data.task_streams import TaskBatches
from cascadelab.models.acoc import ACOCForCausalLM
from cascadelab.models.acoc.accounting import count_parameters
from cascadelab.models.acoc.flops import train_flops
from cascadelab.models.acoc.growth import split_expert
from cascadelab.training.acoc_trainer import CycleEngine, LogFn
from cascadelab.training.callbacks import TrainerCallback
from cascadelab.training.schedules import warmup_factor
from cascadelab.training.trainer import LMTrainer, LossStats


def study_schedule(tasks: Sequence[str], seed: int, steps: int) -> list[str]:
    """The task of every step of a run: uniform over `tasks`, drawn from `seed` alone."""
    rng = random.Random(f"{seed}:acoc-study")
    return [rng.choice(list(tasks)) for _ in range(steps)]


@dataclass(frozen=True)
class BudgetPlan:
    """The budget and the schedule every arm of a seed shares."""

    budget_flops: float
    schedule: list[str]
    eval_every: int
    rewarmup_steps: int = 0
    decay_after_growth: bool = False


class BudgetEngine(CycleEngine):
    """A cycle engine that meters FLOPs, records a val curve and schedules its rate in FLOPs (module docstring)."""

    def __init__(
        self,
        name: str,
        model: ACOCForCausalLM,
        settings: ACOCParams,
        train_batches: Mapping[str, TaskBatches],
        val: Mapping[str, Sequence[LMBatch]],
        seed: int,
        plan: BudgetPlan,
        log_fn: LogFn | None = None,
    ) -> None:
        self.plan = plan
        self.flops = 0.0
        self.stop_flops = plan.budget_flops
        self.curve: list[dict[str, Any]] = []
        self.growth_steps: list[int] = []
        self.growth_flops: list[float] = []
        super().__init__(name, model, settings, train_batches, val, seed, log_fn)
        self.callbacks.append(_FlopMeter(self))

    @property
    def spent(self) -> bool:
        """True once the whole budget is spent."""
        return self.flops >= self.plan.budget_flops

    def cycle_schedule(self, cycle: int) -> list[str]:
        """The next `steps_per_cycle` tasks of the run-long schedule."""
        return self.plan.schedule[self.step : self.step + self.settings.steps_per_cycle]

    def compute_loss(self, model: ACOCForCausalLM, item: tuple[str, LMBatch]) -> tuple[torch.Tensor, LossStats]:
        """The cycle engine's loss; the step's FLOPs are added first (the rate of the next step sees them)."""
        self.flops += train_flops(model.config, *item[1].input_ids.shape)
        return super().compute_loss(model, item)

    def lr_at(self, step: int) -> float:
        """Peak rate × step warm-up × linear decay over the budget's last share × re-warm-up after a growth."""
        s = self.settings
        rate = s.learning_rate * warmup_factor(step, max(1, s.lr_warmup_steps))
        left = 1.0 - self.flops / self.plan.budget_flops
        if s.decay_fraction > 0:
            rate *= max(0.0, min(1.0, left / s.decay_fraction))
        if self.growth_steps and self.plan.rewarmup_steps:
            rate *= warmup_factor(step - self.growth_steps[-1], self.plan.rewarmup_steps)
        if self.growth_flops and self.plan.decay_after_growth:  # linear to 0 from the last growth to the end
            start = self.growth_flops[-1]
            rate *= max(0.0, (self.plan.budget_flops - self.flops) / (self.plan.budget_flops - start))
        return rate

    def train_until(self, flops: float) -> None:
        """Train on the schedule until `flops` are spent (an error when the schedule runs out first)."""
        self.stop_flops = flops
        self.train_cycle(0)
        if self.flops < flops:
            raise ValueError(f"{self.name}: the schedule ran out at step {self.step} before {flops:.3g} FLOPs")

    def record(self) -> dict[str, Any]:
        """Evaluate the val loss now and add the point to the curve (once per step)."""
        if self.curve and self.curve[-1]["step"] == self.step:
            return self.curve[-1]
        tasks = list(self.val)
        evals = self.evaluate(tasks)
        row = {
            "step": self.step,
            "flops": self.flops,
            "val_loss": float(evals["loss"]),
            "params": count_parameters(self.model).total,
            **{f"val_loss_{t}": float(evals["tasks"][t]["loss"]) for t in tasks},
        }
        self.curve.append(row)
        return row

    def grow(self, noise: float, generator: torch.Generator) -> dict[str, Any]:
        """Split every expert of every layer (function-preserving under dense mixing); returns the growth event."""
        before = self.record()["val_loss"]
        pairs: list[tuple[torch.nn.Parameter, torch.nn.Parameter]] = []
        for layer, moe in enumerate(self.model.moe_layers):
            for expert in range(moe.num_experts):
                change = split_expert(self.model, layer, expert, generator, noise)
                pairs += zip(moe.expert(expert).parameters(), change.new_params, strict=True)
        self.structure_changed()
        for source, clone in pairs:
            if source in self.optimizer.state:
                self.optimizer.state[clone] = {k: v.clone() for k, v in self.optimizer.state[source].items()}
        self.growth_steps.append(self.step)
        self.growth_flops.append(self.flops)
        self._apply_lr()
        after = float(self.evaluate(list(self.val))["loss"])
        return {
            "type": "split_all",
            "step": self.step,
            "flops": self.flops,
            "experts": self.model.config.experts_per_layer,
            "params": count_parameters(self.model).total,
            "val_loss_before": before,
            "val_loss_after": after,
            "relative_change": (after - before) / before,
        }


class _FlopMeter(TrainerCallback):
    """Records the val curve every `eval_every` steps; stops the trainer once the engine's FLOP mark is reached."""

    def __init__(self, engine: BudgetEngine) -> None:
        self.engine = engine

    def on_step_end(self, trainer: LMTrainer, step: int, loss: float) -> None:
        """A curve point when due; `should_stop` at the mark (with a point there too)."""
        engine = self.engine
        engine.step = step
        if step % engine.plan.eval_every == 0:
            engine.record()
        if engine.flops >= engine.stop_flops:
            engine.record()
            trainer.should_stop = True
