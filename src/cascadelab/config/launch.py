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
            "processes per training stage: >1 relaunches coarse_sft, hybrid_rnn and sigma_pretrain under "
            "torchrun (batch sizes stay global) and stops limen, refiner, lego_phase1/2, acoc and sigma_rl"
        ),
    )
