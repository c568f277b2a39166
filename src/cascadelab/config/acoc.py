"""The `acoc` section: the growing MoE transformer, its cycle loop and every growth component."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field, model_validator

from cascadelab.config.base import StrictModel, check_at_most, registered_config, section_field, tokenizer_ids
from cascadelab.config.fields import (
    EvalBatchSize,
    GreedyTokens,
    MaxGradNorm,
    PeakLearningRate,
    StageThreads,
    TrainBatchSize,
    WeightDecay,
)
from cascadelab.config.transformer import AttentionHeads, InitializerRange, MaxPositions, check_heads_divide, hf_sizes

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedTokenizerBase


# The ACOC library (models/acoc/, training/acoc_trainer.py) takes these classes as its settings, so that
# params load without importing the model code.
class ACOCModelParams(StrictModel):
    """The initial ACOC architecture: attention sizes, initial experts per layer, expert width, top-k."""

    hidden_size: int = Field(64, gt=0, description="model width; must be divisible by num_heads")
    num_layers: int = Field(2, gt=0, description="transformer layers, each with an expert MLP")
    num_heads: AttentionHeads = 4
    initial_experts: int = Field(1, gt=0, description="experts per layer at the start (<= growth.max_experts)")
    expert_width: int = Field(64, gt=0, description="hidden width of each initial expert")
    top_k: int = Field(0, ge=0, description="experts per token; 0 mixes all experts densely")
    initializer_range: InitializerRange = 0.06
    gate_init: float = Field(3.0, description="initial gate logit (sigmoid(3) = 0.95)")
    max_position_embeddings: MaxPositions = 128

    @model_validator(mode="after")
    def _heads_divide(self) -> ACOCModelParams:
        check_heads_divide(self)
        return self

    def to_config(
        self, tokenizer: PreTrainedTokenizerBase, expert_widths: list[list[list[int]]] | None = None
    ) -> PretrainedConfig:
        """The `ACOCConfig` of this initial architecture (or of `expert_widths`), ids from `tokenizer`."""
        ACOCConfig = registered_config("acoc")

        return ACOCConfig(
            **hf_sizes(self, self.num_layers),
            num_experts=self.initial_experts,
            expert_width=self.expert_width,
            expert_widths=expert_widths,
            num_experts_per_tok=self.top_k,
            gate_init=self.gate_init,
            **tokenizer_ids(tokenizer),
        )


class GrowthParams(StrictModel):
    """When and how the ACOC model grows, and when experts are pruned or merged."""

    kind: Literal["auto", "split", "widen"] = Field("auto", description="auto: split, then widen")
    max_experts: int = Field(4, gt=0, description="experts per layer at most")
    max_width: int = Field(256, gt=0, description="hidden width of an expert at most")
    widen_by: int = Field(16, gt=0, description="hidden units a widening adds to an expert")
    split_noise: float = Field(0.1, ge=0, description="zero-sum ε on the split pair's down projections (× RMS)")
    all_layers: bool = Field(True, description="grow every layer at once (else only the most saturated layer)")
    stagnation_tol: float = Field(0.05, ge=0, description="a val-loss gain below this counts as stagnation")
    saturation_threshold: float = Field(
        0.4, ge=0, le=1, description="combined saturation score above which a layer counts as saturated"
    )
    min_signals: int = Field(2, ge=1, le=3, description="signals (of stagnation, saturation, vote) needed to expand")
    prune_usage: float = Field(0.02, ge=0, description="load × gate under which an expert counts as unused")
    prune_patience: int = Field(2, gt=0, description="cycles an expert must stay unused before it is pruned")
    consolidate_threshold: float = Field(0.9, gt=0, le=1, description="experts merge at this cosine similarity")
    consolidate_min_age: int = Field(2, ge=0, description="cycles an expert lives before it may be merged")


class WarmupParams(StrictModel):
    """Post-expansion warmup: a higher learning rate for the new tensors and forced routing to new experts."""

    steps: int = Field(100, ge=0, description="steps of the post-expansion warm-up")
    lr_multiplier: float = Field(
        10.0, gt=0, description="learning-rate multiplier of the new tensors during the warm-up"
    )
    force_share: float = Field(
        0.3, ge=0, le=1, description="share of tokens forced to the new experts during the warm-up"
    )


class SaturationParams(StrictModel):
    """How the per-expert saturation metrics are measured and combined."""

    batches: int = Field(4, gt=0, description="batches measured per cycle")
    flat_eps: float = Field(0.05, gt=0, description="|act'| below this counts as saturated")
    dead_eps: float = Field(1e-3, ge=0, description="a unit never above this on routed tokens is dead")
    grad_ref: float = Field(0.01, gt=0, description="relative gradient norm that scores 0.5")
    weight_grad: float = Field(1.0, ge=0, description="weight of the gradient-norm signal in the saturation score")
    weight_saturation: float = Field(
        1.0, ge=0, description="weight of the flat-activation signal in the saturation score"
    )
    weight_dead: float = Field(1.0, ge=0, description="weight of the dead-unit signal in the saturation score")
    weight_variance: float = Field(
        1.0, ge=0, description="weight of the activation-variance signal in the saturation score"
    )
    weight_load: float = Field(1.0, ge=0, description="weight of the routing-load signal in the saturation score")


class VoteParams(StrictModel):
    """The variant vote and the soup merge."""

    variants: int = Field(5, gt=0, description="perturbed copies of the model scored in each vote")
    noise: float = Field(0.02, ge=0, description="delta std as a fraction of each tensor's RMS")
    ratio: float = Field(1.0, gt=0, le=1, description="vote expand below ratio × the reference score")
    reference: Literal["history", "current"] = Field(
        "current",
        description="history: the mean of the last `window` cycle scores; current: this cycle's score (sharpness)",
    )
    window: int = Field(5, gt=0, description="last cycle scores the vote's mean is taken over")
    merge_top: int = Field(3, gt=0, description="deltas averaged into the soup")
    soup: bool = Field(True, description="merge the best deltas into a soup (kept when it does not score worse)")


class PenaltyParams(StrictModel):
    """Weights and thresholds of the double growth penalty."""

    alpha: float = Field(0.01, ge=0, description="weight of α·log(1 + P_global/P_baseline)")
    beta: float = Field(0.1, ge=0, description="weight of β·Σ_t max(0, P_t − threshold_t)² (baseline units)")
    threshold_ratio: float = Field(1.5, gt=0, description="initial threshold = ratio × the task's fair share")
    relax_factor: float = Field(1.1, ge=1, description="threshold multiplier when the task's loss stagnates")
    usage_ema: float = Field(0.9, ge=0, lt=1, description="EMA decay of the other tasks' routing usage")


class ContinualParams(StrictModel):
    """Router protection once a new task family appears, and the old tasks' share of later batches."""

    ewc_lambda: float = Field(1.0, ge=0, description="EWC weight (Fisher normalised to mean 1)")
    fisher_batches: int = Field(8, gt=0, description="batches the router's Fisher information is estimated on")
    replay_tokens: int = Field(512, ge=0, description="old-task router inputs kept per layer")
    replay_weight: float = Field(1.0, ge=0, description="weight of the routing-replay loss")
    old_task_share: float = Field(0.25, ge=0, le=1, description="older tasks' share of batches")
    expand_on_new_task: bool = Field(True, description="split the most loaded expert for a new task family")


Arm = Literal["S", "L", "G", "A"]
ALL_ARMS: list[Arm] = ["S", "L", "G", "A"]
Extra = Literal["penalty", "forced_routing", "new_lr", "soup", "ewc", "replay"]


class StudyParams(StrictModel):
    """Growth you can measure (issue 25): arms S, L, G, A on one training-FLOP budget over paired seeds."""

    arms: list[Arm] = Field(
        default_factory=lambda: list(ALL_ARMS),
        description="S: static one expert; L: static large_experts; G: S split at growth_fractions; A: full ACOC",
    )
    large_experts: int = Field(4, gt=1, description="experts per layer of L and of G after its last split")
    budget_large_steps: int = Field(
        750, gt=0, description="training-FLOP budget of every arm, in steps of L (at the nominal sequence length)"
    )
    growth_fractions: list[float] = Field(
        default_factory=lambda: [0.2, 0.4],
        description="budget fractions at which G splits every expert (each split doubles the experts)",
    )
    split_noise: float = Field(1e-3, ge=0, description="G's zero-sum split noise on the down projections (× RMS)")
    rewarmup_steps: int = Field(50, ge=0, description="G's linear learning-rate re-warm-up after each split")
    decay_after_growth: bool = Field(
        False, description="G: after each split decay linearly to 0 over the rest of the budget (else the shared decay)"
    )
    eval_every: int = Field(100, gt=0, description="steps between two val-loss points of every arm")
    val_items_per_task: int = Field(100, gt=0, description="fixed val items per task of the curves (answer tokens)")
    target_fraction: float = Field(
        0.6, gt=0, le=1, description="L* = L's smoothed val loss at this fraction of the budget (declared rule)"
    )
    smooth_fraction: float = Field(
        0.15, ge=0, lt=1, description="trailing-mean window that smooths every curve, as a fraction of the budget"
    )
    nominal_seq_len: int = Field(14, gt=0, description="sequence length that turns the budget into steps per arm")
    workers: int = Field(2, gt=0, description="runs side by side, one single-threaded process each (1: in-process)")
    ablations: list[Extra] = Field(
        default_factory=list,
        description="extras switched off one at a time on A, each an extra arm `A-<extra>` on every seed",
    )

    @model_validator(mode="after")
    def _check_growth(self) -> StudyParams:
        fractions = self.growth_fractions
        if any(not 0 < f < 1 for f in fractions) or fractions != sorted(set(fractions)):
            raise ValueError(f"growth_fractions: must increase strictly inside (0, 1) (got {fractions})")
        if self.ablations and "A" not in self.arms:
            raise ValueError("ablations: switch extras off on A, which is not among the arms")
        if 2 ** len(fractions) != self.large_experts:
            raise ValueError(
                f"growth_fractions: {len(fractions)} doublings cannot reach large_experts {self.large_experts}"
            )
        return self


class ACOCParams(StrictModel):
    """An ACOC run (issue 5): tasks and their first cycle, the cycle loop, and every component's parameters."""

    tasks: dict[str, int] = Field(
        default_factory=lambda: {"add": 0, "sub": 0, "mul": 0, "expr": 0},
        description="task key (family `add` or cell `mul1`) -> cycle at which it enters training",
    )
    cycles: int = Field(
        8, gt=0, description="training cycles (train -> checkpoint -> evaluate -> decide -> expand -> warm up)"
    )
    steps_per_cycle: int = Field(200, gt=0, description="optimizer steps per cycle")
    batch_size: TrainBatchSize = 64
    learning_rate: PeakLearningRate = 2e-3
    lr_warmup_steps: int = Field(100, ge=0, description="steps of linear learning-rate warm-up at the start of the run")
    decay_fraction: float = Field(0.2, ge=0, le=1, description="linear decay to 0 over the last share of steps")
    max_grad_norm: MaxGradNorm = 1.0
    weight_decay: WeightDecay = 0.0
    val_items_per_task: int = Field(100, gt=0, description="val items per task in each cycle's evaluation")
    test_items_per_task: int = Field(200, gt=0, description="test items per task in the final evaluation")
    eval_batch_size: EvalBatchSize = 256
    max_new_tokens: GreedyTokens = 12
    log_every: int = Field(
        50, gt=0, description="steps between two training-loss logs to MLflow (per model, step = global step)"
    )
    num_threads: StageThreads = 2
    baselines: bool = Field(True, description="also train the static initial-size and final-size models")
    seeds: list[int] = Field(
        default_factory=lambda: [0, 1, 2, 3, 4], min_length=1, description="paired seeds of the arms study"
    )
    study: StudyParams = section_field(StudyParams)
    model: ACOCModelParams = section_field(ACOCModelParams)
    growth: GrowthParams = section_field(GrowthParams)
    warmup: WarmupParams = section_field(
        WarmupParams, "post-expansion warm-up: a higher lr for the new tensors, tokens forced to the new experts"
    )
    saturation: SaturationParams = section_field(SaturationParams)
    vote: VoteParams = section_field(VoteParams)
    penalty: PenaltyParams = section_field(PenaltyParams)
    continual: ContinualParams = section_field(ContinualParams)

    @model_validator(mode="after")
    def _check_schedule(self) -> ACOCParams:
        if not self.tasks:
            raise ValueError("tasks: needs at least one task")
        for task, start in self.tasks.items():
            if not 0 <= start < self.cycles:
                raise ValueError(f"tasks.{task}: first cycle must be in [0, {self.cycles - 1}] (got {start})")
        if min(self.tasks.values()) != 0:
            raise ValueError("tasks: at least one task must start at cycle 0")
        check_at_most("lr_warmup_steps", self.lr_warmup_steps, "cycles x steps_per_cycle", self.total_steps)
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
