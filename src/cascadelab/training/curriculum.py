"""The curriculum in a Hugging Face trainer: the callback that decides the switch.

The sampler and its state are in :mod:`cascadelab.data.curriculum`.
"""

from __future__ import annotations

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from cascadelab.data.curriculum import CurriculumState


class CurriculumCallback(TrainerCallback):
    """Decides the switch on a low logged loss or at the warm-up cap (checkpoints keep it with the sampler's state)."""

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
        if logs and "loss" in logs and logs["loss"] < self.switch_loss:
            self.state.decide(state.global_step)

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: object
    ) -> None:
        """Switch at the warm-up cap."""
        if state.global_step >= self.max_warmup_steps:
            self.state.decide(state.global_step)
