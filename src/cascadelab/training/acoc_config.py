"""Settings of an ACOC run (the `acoc` params section): model, cycle loop, growth rules, warmup, penalties.

Every class forbids unknown keys and constrains its values, so the lead can nest `ACOCSettings` directly in
the params schema. Defaults are the measured ones (README table of the `acoc` stage).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from cascadelab.models.acoc.continual import ContinualParams
from cascadelab.models.acoc.penalty import PenaltyParams
from cascadelab.models.acoc.saturation import SaturationParams
from cascadelab.models.acoc.variants import VoteParams


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ACOCModelParams(_Strict):
    """The initial architecture: attention sizes, initial experts per layer, expert width, top-k."""

    hidden_size: int = Field(default=64, gt=0)
    num_layers: int = Field(default=2, gt=0)
    num_heads: int = Field(default=4, gt=0)
    initial_experts: int = Field(default=1, gt=0)
    expert_width: int = Field(default=16, gt=0)
    top_k: int = Field(default=0, ge=0, description="experts per token; 0 mixes all experts densely")
    initializer_range: float = Field(default=0.06, gt=0)
    gate_init: float = Field(default=3.0, description="initial gate logit (sigmoid(3) = 0.95)")
    max_position_embeddings: int = Field(default=128, gt=0)

    @model_validator(mode="after")
    def _heads_divide(self) -> ACOCModelParams:
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size: must be divisible by num_heads ({self.hidden_size} % {self.num_heads})")
        return self


class GrowthParams(_Strict):
    """When and how the model grows, and when experts are pruned or merged."""

    kind: Literal["auto", "split", "widen"] = Field(default="auto", description="auto: split, then widen")
    max_experts: int = Field(default=4, gt=0, description="per layer")
    max_width: int = Field(default=256, gt=0, description="per expert")
    widen_by: int = Field(default=16, gt=0)
    split_noise: float = Field(default=0.1, ge=0, description="zero-sum ε on the split pair's down projections (× RMS)")
    all_layers: bool = Field(default=True, description="grow every layer at once (else only the most saturated layer)")
    stagnation_tol: float = Field(default=0.05, ge=0, description="stagnates below this gain")
    saturation_threshold: float = Field(default=0.3, ge=0, le=1)
    min_signals: int = Field(default=2, ge=1, le=3, description="signals needed to expand")
    prune_usage: float = Field(default=0.02, ge=0, description="load × gate under which an expert counts as unused")
    prune_patience: int = Field(default=2, gt=0, description="cycles an expert must stay unused before it is pruned")
    consolidate_threshold: float = Field(default=0.9, gt=0, le=1, description="merge at this cosine")
    consolidate_min_age: int = Field(default=2, ge=0, description="cycles an expert lives before it may be merged")


class WarmupParams(_Strict):
    """Post-expansion warmup: a higher learning rate for the new tensors and forced routing to new experts."""

    steps: int = Field(default=100, ge=0)
    lr_multiplier: float = Field(default=10.0, gt=0)
    force_share: float = Field(default=0.3, ge=0, le=1)


class ACOCSettings(_Strict):
    """An ACOC run: tasks and their first cycle, the cycle loop, and every component's parameters."""

    tasks: dict[str, int] = Field(
        default_factory=lambda: {"add": 0, "sub": 3},
        description="task key (family `add` or cell `mul1`) -> cycle at which it enters training",
    )
    cycles: int = Field(default=8, gt=0)
    steps_per_cycle: int = Field(default=500, gt=0)
    batch_size: int = Field(default=16, gt=0)
    learning_rate: float = Field(default=1e-3, gt=0)
    lr_warmup_steps: int = Field(default=100, ge=0)
    decay_fraction: float = Field(default=0.2, ge=0, le=1, description="linear decay to 0 over the last share of steps")
    max_grad_norm: float = Field(default=1.0, gt=0)
    weight_decay: float = Field(default=0.0, ge=0)
    val_items_per_task: int = Field(default=100, gt=0)
    test_items_per_task: int = Field(default=200, gt=0)
    eval_batch_size: int = Field(default=256, gt=0)
    max_new_tokens: int = Field(default=12, gt=0)
    log_every: int = Field(default=50, gt=0)
    num_threads: int = Field(default=2, gt=0)
    baselines: bool = Field(default=True, description="also train the static initial-size and final-size models")
    model: ACOCModelParams = Field(default_factory=lambda: ACOCModelParams())
    growth: GrowthParams = Field(default_factory=lambda: GrowthParams())
    warmup: WarmupParams = Field(default_factory=lambda: WarmupParams())
    saturation: SaturationParams = Field(default_factory=lambda: SaturationParams())
    vote: VoteParams = Field(default_factory=lambda: VoteParams())
    penalty: PenaltyParams = Field(default_factory=lambda: PenaltyParams())
    continual: ContinualParams = Field(default_factory=lambda: ContinualParams())

    @model_validator(mode="after")
    def _check_schedule(self) -> ACOCSettings:
        if not self.tasks:
            raise ValueError("tasks: needs at least one task")
        for task, start in self.tasks.items():
            if not 0 <= start < self.cycles:
                raise ValueError(f"tasks.{task}: first cycle must be in [0, {self.cycles - 1}] (got {start})")
        if min(self.tasks.values()) != 0:
            raise ValueError("tasks: at least one task must start at cycle 0")
        if self.model.initial_experts > self.growth.max_experts:
            raise ValueError(
                f"model.initial_experts: exceeds growth.max_experts ({self.model.initial_experts} > "
                f"{self.growth.max_experts})"
            )
        return self

    @property
    def total_steps(self) -> int:
        """Training steps of the whole run (every model trains exactly these, on the same batches)."""
        return self.cycles * self.steps_per_cycle
