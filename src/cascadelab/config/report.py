"""The `report` section: which stages' models the final comparison table holds."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from cascadelab.config.base import StrictModel

ReportStage = Literal["coarse_sft", "cascade_eval", "hybrid_rnn", "lego_phase2", "acoc", "sigma_pretrain", "sigma_rl"]
DEFAULT_REPORT_STAGES: list[ReportStage] = [
    "coarse_sft", "cascade_eval", "hybrid_rnn", "lego_phase2", "acoc", "sigma_pretrain", "sigma_rl"
]  # fmt: skip


class ReportParams(StrictModel):
    """The final report: which stages' models go into the comparison table, in that order."""

    title: str = Field("cascadelab: every model on one test split", description="title of the report page")
    stages: list[ReportStage] = Field(
        default_factory=lambda: list(DEFAULT_REPORT_STAGES),
        min_length=1,
        description="stages whose models enter the comparison table, in that order",
    )
