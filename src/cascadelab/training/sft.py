"""Supervised fine-tuning of a causal LM on prompt/completion records with TRL's SFTTrainer.

Loss is on the completion only (TRL's `completion_only_loss`, EOS appended). The curriculum sampler
replaces the trainer's random sampler; the learning rate follows a warmup-stable-decay schedule defined
in steps. bf16 and activation checkpointing are off unless asked for: on a CPU without fast bf16 TRL's
defaults are ~25x slower (STACK-NOTES). Checkpoints are complete or ignored and carry the curriculum, the
curve and the clock (:mod:`cascadelab.training.sft_checkpoints`), so a killed run resumes to the same model,
curve and token counts.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datasets import Dataset
from torch.utils.data import Sampler
from transformers import (
    PreTrainedModel,
    PreTrainedTokenizerBase,
    TrainerCallback,
)
from trl import SFTConfig, SFTTrainer

from cascadelab.config import CurriculumParams, LoraParams, SFTTrainParams
from cascadelab.data.batches import encode_prompt_response
from cascadelab.data.curriculum import CurriculumSampler, CurriculumState
from cascadelab.ranks import is_main_process
from cascadelab.training.curriculum import CurriculumCallback
from cascadelab.training.sft_checkpoints import (
    TrainingProgress,
    clear_staging,
    finish_checkpoint,
    latest_checkpoint,
    restore,
    staging_folder,
    step_of,
)
from cascadelab.training.trl_config import trl_args

Record = dict[str, Any]


@dataclass
class SFTResult:
    """What a finished SFT run reports."""

    history: list[dict[str, float]] = field(default_factory=list)
    train_seconds: float = 0.0
    train_tokens: int = 0
    curriculum_switch_step: int | None = None
    final_loss: float = float("nan")
    resumed_from_step: int = 0

    @property
    def tokens_per_second(self) -> float:
        """Training tokens (non-padding) per second of training."""
        return self.train_tokens / self.train_seconds if self.train_seconds else 0.0


class _CurriculumSFTTrainer(SFTTrainer):
    """SFTTrainer whose training sampler is a `CurriculumSampler` and whose checkpoints are complete or ignored."""

    curriculum_sampler: CurriculumSampler | None = None
    progress: TrainingProgress | None = None
    _staging: Path | None = None

    def _get_train_sampler(self, train_dataset: Any = None) -> Sampler[int] | None:
        return self.curriculum_sampler or super()._get_train_sampler(train_dataset)

    def _get_output_dir(self, trial: Any) -> str:
        return str(self._staging) if self._staging is not None else super()._get_output_dir(trial)

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        """Hugging Face's checkpoint, written into a staging folder, then published whole with our state."""
        output_dir = Path(super()._get_output_dir(trial))
        step = self.state.global_step
        self._staging = staging_folder(output_dir, step)
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self._staging = None
        self.accelerator.wait_for_everyone()  # every rank's files (its RNG state) are in before the manifest
        if self.args.should_save:
            assert self.curriculum_sampler is not None and self.progress is not None
            finish_checkpoint(output_dir, step, self.curriculum_sampler, self.progress)
        self.accelerator.wait_for_everyone()


def tokenize_prompt_completion(
    tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], completions: Sequence[str]
) -> Dataset:
    """Pre-tokenized prompt/completion rows: `input_ids` (EOS appended) and `labels` (-100 on the prompt).

    Equivalent to TRL's own prompt-completion preparation with `completion_only_loss`, done by the data
    layer's encoder in two batched tokenizer calls instead of several per-row passes (seconds saved on
    every stage start); the trainer is told to skip its own preparation.
    """
    rows = encode_prompt_response(tokenizer, prompts, completions)
    return Dataset.from_dict(
        {"input_ids": [list(row.input_ids) for row in rows], "labels": [row.labels for row in rows]}
    )


def sft_config(train: SFTTrainParams, seed: int, output_dir: Path, report_to: Sequence[str]) -> SFTConfig:
    """TRL settings for a run: steps-based WSD schedule, periodic checkpoints, CPU-safe precision defaults."""
    decay_steps = max(1, int(train.max_steps * train.decay_fraction))
    return trl_args(
        SFTConfig,
        train,
        seed,
        output_dir,
        report_to=report_to,
        bf16=train.bf16,
        activation_checkpointing=train.activation_checkpointing,
        lr_scheduler_type="warmup_stable_decay",
        lr_scheduler_kwargs={"num_decay_steps": decay_steps, "decay_type": "linear", "min_lr_ratio": 0.0},
        warmup_steps=train.warmup_steps,
        weight_decay=train.weight_decay,
        max_grad_norm=train.max_grad_norm,
        save_strategy="steps" if train.save_steps else "no",
        save_steps=train.save_steps or 500,
        save_total_limit=None,  # the trainer keeps its two newest whole checkpoints itself
        completion_only_loss=True,
        eos_token="[EOS]",
        max_length=None,
        dataset_kwargs={"skip_prepare_dataset": True},
        include_num_input_tokens_seen="non_padding",
        disable_tqdm=os.environ.get("CASCADELAB_NO_PROGRESS") == "1",
    )


def train_sft(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    records: Sequence[Record],
    train: SFTTrainParams,
    curriculum: CurriculumParams,
    mix: dict[str, float],
    seed: int,
    output_dir: Path,
    lora: LoraParams | None = None,
    report_to: Sequence[str] = ("mlflow",),
    target_field: str = "response",
    callbacks: Sequence[TrainerCallback] = (),
) -> tuple[PreTrainedModel, SFTResult]:
    """Fine-tune `model` on `records` (prompt → `target_field`); return the trained model and its history.

    Checkpoints go to `output_dir` every `train.save_steps` steps; if `output_dir` already holds a whole one
    (a killed run with the same settings), training resumes from it, draws the same batches as an
    uninterrupted run would and continues its curve and clock.
    """
    dataset = tokenize_prompt_completion(tokenizer, [r["prompt"] for r in records], [r[target_field] for r in records])
    if is_main_process():
        clear_staging(output_dir)
    last = latest_checkpoint(output_dir)
    state = CurriculumState()
    max_warmup = int(train.max_steps * curriculum.max_warmup_fraction)
    sampler = CurriculumSampler(
        [r["task"] for r in records],
        mix,
        curriculum.warmup_tasks,
        train.max_steps * train.batch_size,
        seed,
        state,
        batch_size=train.batch_size,
        group_by_task=curriculum.group_batches_by_task,
    )
    progress = restore(last, sampler) if last is not None else TrainingProgress()
    peft_config = None
    if lora is not None and lora.enabled:
        from peft import LoraConfig

        peft_config = LoraConfig(
            r=lora.r,
            lora_alpha=lora.alpha,
            lora_dropout=lora.dropout,
            target_modules=list(lora.target_modules),
            task_type="CAUSAL_LM",
        )
    trainer = _CurriculumSFTTrainer(
        model=model,
        args=sft_config(train, seed, output_dir, report_to),
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=[CurriculumCallback(state, curriculum.switch_loss, max_warmup), progress, *callbacks],
        peft_config=peft_config,
    )
    trainer.curriculum_sampler, trainer.progress = sampler, progress
    if last is not None and is_main_process():
        print(f"resuming from {last}", flush=True)
    trainer.train(resume_from_checkpoint=str(last) if last is not None else None)
    result = SFTResult(
        history=progress.rows,
        train_seconds=progress.seconds(),
        train_tokens=int(trainer.state.num_input_tokens_seen),
        curriculum_switch_step=state.switch_step,
        final_loss=progress.rows[-1]["loss"] if progress.rows else float("nan"),
        resumed_from_step=step_of(last) if last is not None else 0,
    )
    trained = trainer.model
    if not isinstance(trained, PreTrainedModel) and not hasattr(trained, "merge_and_unload"):
        raise TypeError(f"unexpected trained model type {type(trained).__name__}")
    return trained, result  # type: ignore[return-value]  # a PeftModel when LoRA is on
