"""The blocks every params section shares: the strict base model, the WSD train block, curriculum, eval, mixes.

Nothing under `cascadelab.config` imports the rest of the library at module level, so loading params.yaml
never imports torch or transformers (`tests/unit/config/test_leaf.py` checks).
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from cascadelab.config.fields import (
    DecayFraction,
    GroupBatchesByTask,
    MaxGradNorm,
    SaveSteps,
    WarmupSteps,
    WeightDecay,
)

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

TASK_FAMILIES = ("add", "sub", "mul", "expr", "reverse", "word")

MIX_DESCRIPTION = "sampling weight of each task family after the curriculum's warm-up"


class ParamsError(ValueError):
    """A params.yaml problem, reported as one line naming the key path."""


class StrictModel(BaseModel):
    """Base for every params section: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, strict=True)


def section_description(model: type[BaseModel]) -> str:
    """The first paragraph of `model`'s docstring as a field description: no final period, lower-case start.

    The start stays as written when the first word holds another capital (an acronym or a name: GRPO, SigmaLLM).
    """
    text = " ".join(inspect.cleandoc(model.__doc__ or "").split("\n\n")[0].split())
    text = text.removesuffix(".")
    first_word = text.split(" ", 1)[0]
    if first_word[1:] == first_word[1:].lower():
        text = text[:1].lower() + text[1:]
    return text


def section_field(model: type[BaseModel], description: str | None = None) -> Any:
    """A nested section that defaults to `model()`, described by `description` or else by `model`'s docstring."""
    return Field(default_factory=model, description=description or section_description(model))


class TrainParams(StrictModel):
    """The optimisation block shared by the step-based LM trainings: AdamW with a WSD schedule, clipped grads."""

    max_steps: int = Field(
        8000, gt=0, description="optimizer steps of the run (the schedule is laid over exactly these)"
    )
    batch_size: int = Field(16, gt=0, description="training sequences per optimizer step")
    learning_rate: float = Field(1e-3, gt=0, description="AdamW peak learning rate, held after warm-up until the decay")
    warmup_steps: WarmupSteps = 100
    decay_fraction: DecayFraction = 0.2
    weight_decay: WeightDecay = 0.0
    max_grad_norm: MaxGradNorm = 1.0
    logging_steps: int = Field(
        50, gt=0, description="steps between two training-loss log rows (MLflow and the history)"
    )

    @model_validator(mode="after")
    def _warmup_within_steps(self) -> TrainParams:
        check_at_most("warmup_steps", self.warmup_steps, "max_steps", self.max_steps)
        return self


class SFTTrainParams(TrainParams):
    """Optimisation settings of a supervised fine-tuning run (steps, not seconds, so reruns are identical)."""

    save_steps: SaveSteps = 1000
    bf16: bool = Field(
        False, description="train in bfloat16 autocast (only on hardware with fast bf16; ~25x slower on this CPU)"
    )
    activation_checkpointing: bool = Field(
        False, description="recompute activations in the backward pass to save memory (gradient checkpointing)"
    )
    num_threads: int = Field(2, gt=0, description="torch CPU threads of the training process")

    @model_validator(mode="after")
    def _whole_logging_windows(self) -> SFTTrainParams:
        # the first loss row after a resume would average fewer steps than an uninterrupted run's
        if self.save_steps <= self.max_steps and self.save_steps % self.logging_steps:
            raise ValueError(
                f"save_steps: {self.save_steps} must be a multiple of logging_steps ({self.logging_steps}), "
                "so a resumed run logs the same curve"
            )
        return self


class CurriculumParams(StrictModel):
    """Warm-up on easy families, then the full mix (STACK-NOTES: escape the add/sub plateau first)."""

    warmup_tasks: list[str] = Field(
        default_factory=lambda: ["add", "sub"],
        description="families trained alone first, until the windowed train loss falls below switch_loss ([]: none)",
    )
    switch_loss: float = Field(
        0.1, gt=0, description="windowed training loss under which the warm-up ends and the full mix starts"
    )
    max_warmup_fraction: float = Field(
        0.6, ge=0, le=1, description="the warm-up ends at this share of max_steps at the latest"
    )
    group_batches_by_task: GroupBatchesByTask = True


class EvalParams(StrictModel):
    """Evaluation on the test split."""

    batch_size: int = Field(256, gt=0, description="prompts per generation batch in the test evaluation")
    max_new_tokens: int = Field(
        12, gt=0, description="greedy decoding stops after this many generated tokens (answers are <= 6 tokens + EOS)"
    )
    sample_predictions: int = Field(
        64, ge=0, description="test predictions written to the stage's prediction sample (0: none)"
    )


def default_mix() -> dict[str, float]:
    """Sampling weights of the task families after the curriculum's warm-up (the coarse recipe's mix)."""
    return {"add": 0.3, "sub": 0.3, "mul": 0.16, "expr": 0.08, "reverse": 0.08, "word": 0.08}


def check_mix(mix: dict[str, float]) -> None:
    """Raise ValueError naming the first bad weight of a task mix."""
    for name, weight in mix.items():
        if weight < 0:
            raise ValueError(f"mix.{name}: must be >= 0 (got {weight})")
    if sum(mix.values()) <= 0:
        raise ValueError("mix: at least one weight must be > 0")


def check_each(key: str, values: Iterable[Any], ok: Callable[[Any], bool], rule: str) -> None:
    """Raise ValueError `<key>: each <rule> (got <value>)` for the first of `values` that is not `ok`."""
    for value in values:
        if not ok(value):
            raise ValueError(f"{key}: each {rule} (got {value})")


def section_class(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model of an annotation (`X`, `X | None`), or None for any other type."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        models = [arg for arg in typing.get_args(annotation) if section_class(arg)]
        return models[0] if len(models) == 1 else None
    return None


def entry_class(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model of a `dict[str, X]` annotation's values, or None."""
    if typing.get_origin(annotation) is dict:
        return section_class(typing.get_args(annotation)[1])
    return None


def field_description(model: type[BaseModel], path: Sequence[str | int]) -> str | None:
    """The description of the field at key `path` below `model` (None where the path names no field)."""
    field = None
    current: type[BaseModel] | None = model
    entries = False  # the next key names an entry of a dict[str, model]
    for part in path:
        if current is None:
            return None
        if entries:
            entries = False
            continue
        field = current.model_fields.get(str(part))
        if field is None:
            return None
        current = section_class(field.annotation) or entry_class(field.annotation)
        entries = entry_class(field.annotation) is not None
    return field.description if field else None


def registered_config(model_type: str) -> Any:
    """The Hugging Face config class registered under `model_type` with `AutoConfig.register`.

    The schema imports no library code (config is a leaf), so a model section's `to_config` reaches its
    config class through transformers' registry, which the model package fills when it is imported.
    """
    from transformers import CONFIG_MAPPING  # here, not at the top: loading params.yaml must not import torch

    if model_type not in CONFIG_MAPPING:
        raise ValueError(
            f"model type {model_type!r} is not registered with AutoConfig: import its cascadelab.models package first"
        )
    return CONFIG_MAPPING[model_type]


def tokenizer_ids(tokenizer: PreTrainedTokenizerBase) -> dict[str, Any]:
    """The HF-config fields every model takes from the corpus tokenizer: vocabulary size and special ids."""
    return {
        "vocab_size": len(tokenizer),
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }


def check_at_most(key: str, value: float, limit_key: str, limit: float) -> None:
    """Raise ValueError `<key>: <value> must be at most <limit_key> (<limit>)` when `value` exceeds `limit`."""
    if value > limit:
        raise ValueError(f"{key}: {value} must be at most {limit_key} ({limit})")


def check_settings(section: str, settings: object, rules: Iterable[tuple[str, bool, str]]) -> None:
    """Raise one `<section>.<key>: must be <rule>, got <value>` line for the first failed (key, ok, rule)."""
    for key, ok, rule in rules:
        if not ok:
            raise ValueError(f"{section}.{key}: must be {rule}, got {getattr(settings, key)}")
