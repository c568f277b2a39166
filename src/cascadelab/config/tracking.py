"""The `tracking` section: where stages log to MLflow."""

from __future__ import annotations

from pydantic import Field

from cascadelab.config.base import StrictModel


class TrackingParams(StrictModel):
    """Where and how stages log to MLflow."""

    experiment: str = Field("cascadelab", min_length=1, description="MLflow experiment every stage run is logged under")
