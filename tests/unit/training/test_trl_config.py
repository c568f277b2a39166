"""The one TRL-arguments builder gives every call site exactly the config it built by hand before."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch
from trl import GRPOConfig, SFTConfig

from cascadelab.config import GRPOParams, RefinerSettings, SFTTrainParams
from cascadelab.training.refiner_trainer import self_improvement_config
from cascadelab.training.sft import sft_config
from cascadelab.training.sigma.grpo_bridge import grpo_config
from cascadelab.training.trl_config import trl_args


def _same(got: Any, expected: Any) -> None:
    assert type(got) is type(expected)
    assert got.to_dict() == expected.to_dict()


@pytest.mark.parametrize("save_steps", [1000, 0])
def test_sft_config_equals_the_hand_built_one(tmp_path: Path, save_steps: int) -> None:
    train = SFTTrainParams(save_steps=save_steps)
    decay_steps = max(1, int(train.max_steps * train.decay_fraction))
    expected = SFTConfig(
        output_dir=str(tmp_path),
        max_steps=train.max_steps,
        per_device_train_batch_size=train.batch_size,
        learning_rate=train.learning_rate,
        lr_scheduler_type="warmup_stable_decay",
        lr_scheduler_kwargs={"num_decay_steps": decay_steps, "decay_type": "linear", "min_lr_ratio": 0.0},
        warmup_steps=train.warmup_steps,
        weight_decay=train.weight_decay,
        max_grad_norm=train.max_grad_norm,
        logging_steps=train.logging_steps,
        save_strategy="steps" if train.save_steps else "no",
        save_steps=train.save_steps or 500,
        save_total_limit=None,  # sft.py keeps its two newest whole checkpoints itself
        report_to=["mlflow"],
        bf16=train.bf16,
        activation_checkpointing=train.activation_checkpointing,
        gradient_checkpointing=train.activation_checkpointing,
        use_cpu=not torch.cuda.is_available(),
        seed=7,
        data_seed=7,
        completion_only_loss=True,
        eos_token="[EOS]",
        max_length=None,
        dataset_kwargs={"skip_prepare_dataset": True},
        include_num_input_tokens_seen="non_padding",
        dataloader_num_workers=0,
        disable_tqdm=os.environ.get("CASCADELAB_NO_PROGRESS") == "1",
    )
    _same(sft_config(train, 7, tmp_path, ["mlflow"]), expected)


def test_sigma_grpo_config_equals_the_hand_built_one(tmp_path: Path) -> None:
    settings = GRPOParams()
    expected = GRPOConfig(
        output_dir=str(tmp_path),
        use_cpu=True,
        bf16=False,
        activation_checkpointing=False,
        per_device_train_batch_size=settings.prompts_per_step * settings.num_generations,
        num_generations=settings.num_generations,
        max_completion_length=settings.max_completion_length,
        temperature=settings.temperature,
        importance_sampling_level=settings.importance_sampling_level,
        beta=settings.beta,
        epsilon=settings.epsilon,
        loss_type="grpo",
        logging_steps=10**9,
        report_to=[],
        save_strategy="no",
        seed=3,
        dataloader_num_workers=0,
    )
    _same(grpo_config(settings, tmp_path, 3), expected)


def test_refiner_grpo_config_equals_the_hand_built_one(tmp_path: Path) -> None:
    settings = RefinerSettings()
    rl = settings.self_improvement
    expected = GRPOConfig(
        output_dir=str(tmp_path / "grpo-shared"),
        max_steps=rl.max_steps,
        per_device_train_batch_size=rl.batch_size,
        num_generations=rl.num_generations,
        learning_rate=rl.learning_rate,
        temperature=rl.temperature,
        max_completion_length=settings.max_new_tokens,
        beta=0.0,
        logging_steps=rl.logging_steps,
        save_strategy="no",
        report_to=[],
        bf16=False,
        activation_checkpointing=False,
        use_cpu=not torch.cuda.is_available(),
        seed=5,
        data_seed=5,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    _same(self_improvement_config(settings, tmp_path / "grpo-shared", 5), expected)


def test_shared_settings_are_cpu_safe_and_seeded(tmp_path: Path) -> None:
    train = SFTTrainParams(max_steps=9, batch_size=4, learning_rate=2e-4, logging_steps=3, warmup_steps=2)
    args = trl_args(SFTConfig, train, 11, tmp_path, report_to=("mlflow",), use_cpu=True)
    assert (args.bf16, args.activation_checkpointing, args.gradient_checkpointing) == (False, False, False)
    assert (args.use_cpu, args.seed, args.data_seed, args.dataloader_num_workers) == (True, 11, 11, 0)
    assert (args.output_dir, args.report_to) == (str(tmp_path), ["mlflow"])
    assert (args.max_steps, args.per_device_train_batch_size, args.learning_rate, args.logging_steps) == (
        9,
        4,
        2e-4,
        3,
    )
    assert trl_args(GRPOConfig, None, 11, tmp_path, data_seed=None).data_seed is None  # a method may override
