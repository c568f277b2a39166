"""One builder for the TRL training arguments of every SFT and GRPO run.

Every TRL run shares the CPU-safe settings of STACK-NOTES: bf16 and activation checkpointing off unless a
params section asks for them (TRL's defaults are ~25x slower on a CPU without fast bf16), the CPU when no
GPU is present, seeded model init and data order, data loaded in-process, the caller's trackers; and the
step budget of the run's params section. The caller adds its method's own fields (schedule, generation,
saving).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

import torch
from transformers import TrainingArguments

from cascadelab.ranks import split_batch
from cascadelab.training.run_length import RunLength

ArgsT = TypeVar("ArgsT", bound=TrainingArguments)


class TRLStepParams(RunLength, Protocol):
    """The step budget a TRL run reads from its params section (e.g. `SFTTrainParams`)."""

    @property
    def batch_size(self) -> int:
        """Training rows (completions, for GRPO) per optimizer step."""
        ...

    @property
    def learning_rate(self) -> float:
        """Peak learning rate."""
        ...


def trl_args(
    config_class: type[ArgsT],
    train: TRLStepParams | None,
    seed: int,
    output_dir: Path,
    *,
    report_to: Sequence[str] = (),
    bf16: bool = False,
    activation_checkpointing: bool = False,
    use_cpu: bool | None = None,
    **method_specific: Any,
) -> ArgsT:
    """`config_class` (TRL's `SFTConfig`, `GRPOConfig`) with the shared settings and the method's own fields.

    `train` None leaves the step budget to `method_specific` (a caller that drives the updates itself);
    `use_cpu` None trains on the CPU exactly when no GPU is present; `method_specific` may override a
    shared field (e.g. `data_seed=None` where TRL's sampler draws nothing).
    """
    shared: dict[str, Any] = {
        "output_dir": str(output_dir),
        "report_to": list(report_to),
        "bf16": bf16,
        "activation_checkpointing": activation_checkpointing,
        "gradient_checkpointing": activation_checkpointing,
        "use_cpu": not torch.cuda.is_available() if use_cpu is None else use_cpu,
        "seed": seed,
        "data_seed": seed,
        "dataloader_num_workers": 0,
    }
    if train is not None:
        shared.update(
            max_steps=train.max_steps,
            per_device_train_batch_size=split_batch(train.batch_size, "train.batch_size"),  # global batch kept
            learning_rate=train.learning_rate,
            logging_steps=train.logging_steps,
        )
    return config_class(**{**shared, **method_specific})


__all__ = ["TRLStepParams", "trl_args"]
