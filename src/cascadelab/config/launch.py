"""The `launch` section: how many processes a rank-aware training stage runs on."""

from __future__ import annotations

from pydantic import Field

from cascadelab.config.base import StrictModel


class LaunchParams(StrictModel):
    """How many processes a rank-aware training stage runs on (torchrun; gloo on CPU, NCCL on GPUs)."""

    nproc: int = Field(
        1,
        ge=1,
        description=(
            "processes per rank-aware stage (coarse_sft, hybrid_rnn); >1 relaunches it under torchrun, "
            "batch sizes stay global"
        ),
    )
