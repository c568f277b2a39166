"""Building blocks of the params schema that setting modules share without importing `cascadelab.config`.

`cascadelab.config` imports the stage settings (cascade, optimizers), so those cannot import it back; the
strict base model and the SFT optimisation block live here, below all of them.
"""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict, Field


class StrictModel(BaseModel):
    """Base for every params section: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SFTTrainParams(StrictModel):
    """Optimisation settings of a supervised fine-tuning run (steps, not seconds, so reruns are identical)."""

    max_steps: int = Field(8000, gt=0)
    batch_size: int = Field(16, gt=0)
    learning_rate: float = Field(1e-3, gt=0)
    warmup_steps: int = Field(100, ge=0)
    decay_fraction: float = Field(0.2, ge=0, le=1)
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    logging_steps: int = Field(50, gt=0)
    save_steps: int = Field(1000, ge=0)
    bf16: bool = False
    activation_checkpointing: bool = False
    num_threads: int = Field(2, gt=0)


def check_settings(section: str, settings: object, rules: Iterable[tuple[str, bool, str]]) -> None:
    """Raise one `<section>.<key>: must be <rule>, got <value>` line for the first failed (key, ok, rule)."""
    for key, ok, rule in rules:
        if not ok:
            raise ValueError(f"{section}.{key}: must be {rule}, got {getattr(settings, key)}")
