"""Callbacks of the LM trainer, written once: best-state early stopping and the curriculum's switch to the mix.

A callback sees the loop at four points: before the first step (`on_train_begin`, before a resumed run's
state is loaded), after every optimizer step (`on_step_end`, with the step's loss), after every
evaluation (`on_evaluate`, with the evaluation's figures) and after the last step (`on_train_end`, also
after an early stop). Its `state_dict` joins the trainer's resumable checkpoints.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch

from cascadelab.data.curriculum import LoopCurriculum

if TYPE_CHECKING:
    from cascadelab.training.trainer import LMTrainer


class TrainerCallback:
    """A loop callback; every method does nothing until a subclass overrides it."""

    def on_train_begin(self, trainer: LMTrainer) -> None:
        """Before the first step (and before a checkpoint is restored)."""

    def on_step_end(self, trainer: LMTrainer, step: int, loss: float) -> None:
        """After optimizer step `step` (1-based) whose loss was `loss`."""

    def on_evaluate(self, trainer: LMTrainer, step: int, metrics: dict[str, float]) -> None:
        """After the evaluation at `step`; set `trainer.should_stop` to end the run after this step."""

    def on_train_end(self, trainer: LMTrainer) -> None:
        """After the last step, early stop included."""

    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs to continue this callback exactly."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""


def clone_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of `model`'s state dict."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


class EarlyStopping(TrainerCallback):
    """Keeps the weights of the best `monitor` value seen; stops after `patience` evaluations without improvement.

    An evaluation improves when its value is below the best minus `min_delta`. While `counting` is off (e.g. a
    curriculum's warm-up) the best weights are still tracked but worse evaluations do not use up the patience.
    The best weights are loaded back when training ends.
    """

    def __init__(self, patience: int, min_delta: float = 0.0, monitor: str = "val_loss", counting: bool = True) -> None:
        self.patience = patience
        self.min_delta = min_delta
        self.monitor = monitor
        self.counting = counting
        self.best_value = math.inf
        self.best_step = 0
        self.bad_evals = 0
        self.stopped_early = False
        self.best_state: dict[str, torch.Tensor] = {}

    def restart(self) -> None:
        """A new objective: forget the best value and the patience used (the best weights stay until beaten)."""
        self.best_value, self.bad_evals, self.counting = math.inf, 0, True

    def on_train_begin(self, trainer: LMTrainer) -> None:
        """The starting weights are the best until an evaluation improves on them."""
        self.best_state = clone_state(trainer.model)

    def observe(self, model: torch.nn.Module, step: int, value: float) -> bool:
        """Judge `model`'s evaluation `value` at `step`: keep improved weights; True when it uses up the patience."""
        if value < self.best_value - self.min_delta:
            self.best_value, self.best_step, self.bad_evals = value, step, 0
            self.best_state = clone_state(model)
            return False
        if not self.counting:
            return False
        self.bad_evals += 1
        return self.bad_evals >= self.patience

    def on_evaluate(self, trainer: LMTrainer, step: int, metrics: dict[str, float]) -> None:
        """Judge the monitored figure; stop the run when the patience is used up."""
        if self.observe(trainer.model, step, metrics[self.monitor]):
            self.stopped_early = trainer.should_stop = True

    def on_train_end(self, trainer: LMTrainer) -> None:
        """Load the best weights back."""
        trainer.model.load_state_dict(self.best_state)

    def state_dict(self) -> dict[str, Any]:
        """Best value, step and weights, patience used, whether worse evaluations count."""
        keys = ("best_value", "best_step", "bad_evals", "stopped_early", "counting", "best_state")
        return {key: getattr(self, key) for key in keys}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""
        for key, value in state.items():
            setattr(self, key, value)


class CurriculumSwitch(TrainerCallback):
    """Feeds a `LoopCurriculum` each step's windowed loss; once its batches come from the mix, restarts `stopping`.

    The warm-up does not train the other tasks, so early stopping counts only evaluations of the mix phase:
    `stopping` stops counting from construction until the first mix batch.
    """

    def __init__(self, curriculum: LoopCurriculum, stopping: EarlyStopping) -> None:
        self.curriculum = curriculum
        self.stopping = stopping
        self.mixing = False
        stopping.counting = False

    def on_step_end(self, trainer: LMTrainer, step: int, loss: float) -> None:
        """Let the curriculum decide on the logging window's loss; restart early stopping at the first mix batch."""
        self.curriculum.observe(step, trainer.window_loss(step))
        if not self.mixing and self.curriculum.mixing_at(step):
            self.mixing = True
            self.stopping.restart()

    def state_dict(self) -> dict[str, Any]:
        """Whether the mix phase has begun, and the curriculum's switch step (which batches the sampler draws)."""
        return {"mixing": self.mixing, "switch_step": self.curriculum.state.switch_step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned (KeyError for a state without the switch step)."""
        self.mixing, self.curriculum.state.switch_step = state["mixing"], state["switch_step"]


class StepLosses(TrainerCallback):
    """The loss of every step, for callers that return the whole curve."""

    def __init__(self) -> None:
        self.values: list[float] = []

    def on_step_end(self, trainer: LMTrainer, step: int, loss: float) -> None:
        """Keep the step's loss."""
        self.values.append(loss)
