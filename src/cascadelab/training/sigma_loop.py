"""SIGMA on the LM trainer: the INSTANT memory plan applied before the first training forward."""

from __future__ import annotations

from typing import Any

from torch import nn

from cascadelab.config import InstantParams
from cascadelab.models.sigma import apply_instant_plan
from cascadelab.training.trainer import LMTrainer


def supports_instant(model: nn.Module) -> bool:
    """Whether `model` is a SIGMA model that takes the INSTANT memory plan."""
    return hasattr(model, "instant_plan") and hasattr(model, "model")


class SigmaTrainer(LMTrainer):
    """`LMTrainer` on causal-LM batches that applies `instant` to SIGMA models first (plain models ignore it)."""

    def __init__(self, *args: Any, instant: InstantParams | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.instant = instant

    def prepare_model(self) -> None:
        """Apply the INSTANT memory plan to a SIGMA model (its training forward refuses to run without it)."""
        if supports_instant(self.model):
            plan = self.instant or InstantParams()
            apply_instant_plan(self.model, plan.chunk_size, checkpoint_blocks=plan.checkpoint_blocks)
