"""The `lego` section: shallow causal model, hard examples, upper block, full-depth baseline."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field, model_validator

from cascadelab.config.base import (
    StrictModel,
    check_at_most,
    check_each,
    registered_config,
    section_field,
    tokenizer_ids,
)
from cascadelab.config.fields import EvalBatchSize, GreedyTokens, PeakLearningRate, TrainBatchSize, WeightDecay
from cascadelab.config.transformer import AttentionHeads, InitializerRange, MaxPositions, MLPSize, hf_sizes

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedTokenizerBase


class LegoModelParams(StrictModel):
    """Width of the LEGO model and its depth: the causal phase-1 block, then the full depth of phase 2."""

    hidden_size: int = Field(128, gt=0, description="model width; must split into num_heads heads of even size")
    num_heads: AttentionHeads = 4
    intermediate_size: MLPSize = 512
    phase1_layers: int = Field(
        2, gt=0, description="layers of the causal lower block trained in phase 1 (the routing exit)"
    )
    phase2_layers: int = Field(
        4, gt=0, description="full depth after phase 2; the layers above phase1_layers attend over the phase-1 states"
    )
    initializer_range: InitializerRange = 0.06
    max_position_embeddings: MaxPositions = 256

    @model_validator(mode="after")
    def _check_shape(self) -> LegoModelParams:
        if self.hidden_size % self.num_heads or (self.hidden_size // self.num_heads) % 2:
            raise ValueError(
                f"hidden_size: must split into num_heads={self.num_heads} heads of even size (got {self.hidden_size})"
            )
        if self.phase2_layers <= self.phase1_layers:
            raise ValueError(
                f"phase2_layers: must exceed phase1_layers={self.phase1_layers} (got {self.phase2_layers})"
            )
        return self


# Both LEGO loops clip their gradients alike.
GradClip = Annotated[
    float | None, Field(gt=0, description="gradients are clipped to this global L2 norm (null: no clipping)")
]


class LegoLoopParams(StrictModel):
    """A causal training run with early stopping on val loss (phase 1, and the full-depth baseline)."""

    learning_rate: PeakLearningRate = 1e-3
    patience: int = Field(
        1,
        ge=0,
        description="validations without val-loss improvement tolerated; one more stops (best weights restored)",
    )
    batch_size: TrainBatchSize = 32
    max_epochs: int = Field(20, gt=0, description="passes over the training split at most")
    max_steps: int | None = Field(None, gt=0, description="optimizer steps at most (null: no cap)")
    eval_every: int | None = Field(200, gt=0, description="steps between two validations (null: once per epoch)")
    eval_batch_size: int = Field(256, gt=0, description="sequences per validation batch")
    warmup_steps: int = Field(100, ge=0, description="steps of linear learning-rate warm-up")
    weight_decay: WeightDecay = 0.0
    grad_clip: GradClip = 1.0
    log_every: int = Field(50, gt=0, description="steps between two training-loss logs")
    decay_fraction: float = Field(
        0.0,
        ge=0,
        le=1,
        description="share of max_steps at the end over which the rate decays linearly to 0 (0: none; needs max_steps)",
    )

    @model_validator(mode="after")
    def _warmup_within_steps(self) -> LegoLoopParams:
        if self.max_steps is not None:
            check_at_most("warmup_steps", self.warmup_steps, "max_steps", self.max_steps)
        return self


class LegoHardExampleParams(StrictModel):
    """Threshold on val so that `hard_example_ratio` of its response tokens fall below; rows from train."""

    hard_example_ratio: float = Field(
        0.5, gt=0, lt=1, description="share of val response tokens whose exit confidence falls below the threshold"
    )
    max_train_rows: int = Field(
        200_000,
        gt=0,
        description="cap on train hard-example rows (28 bytes a row: sequence index, position, target, confidence)",
    )
    max_val_rows: int = Field(20_000, gt=0, description="cap on val hard-example rows")
    batch_size: int = Field(256, gt=0, description="sequences per batch of the collection forward passes")


class LegoPhase2Params(LegoLoopParams):
    """The upper block trained on the hard examples' sequences, lower block frozen; the exit rule chosen on val."""

    learning_rate: PeakLearningRate = 1e-4  # the seed's phase-2 defaults
    patience: int = Field(
        3,
        ge=0,
        description="validations without val-loss improvement tolerated; one more stops (best weights restored)",
    )
    easy_weight: float = Field(
        0.3, ge=0, le=1, description="loss weight of the response tokens that are not hard (hard tokens weigh 1)"
    )
    exit_ppl_tolerance: float = Field(
        1.02,
        ge=1,
        description="the routing threshold is the lowest whose routed val ppl is within this factor of full depth",
    )


class LegoBaselineParams(StrictModel):
    """The standard causal model of the full depth, trained from scratch for comparison.

    `budget: compute` gives it LEGO's training FLOPs (phase 1 + hard-example collection + phase 2);
    `budget: tokens` gives it LEGO's supervised tokens (phase-1 tokens + phase-2 supervised tokens).
    `max_train_tokens` caps either. With `train.decay_fraction` set, `train.max_steps` is replaced by the steps
    the budget buys, so the schedule decays to 0 as the budget runs out.
    """

    budget: Literal["compute", "tokens"] = Field(
        "compute", description="compute: LEGO's training FLOPs | tokens: LEGO's supervised tokens"
    )
    max_train_tokens: int | None = Field(
        None, gt=0, description="cap on the baseline's training tokens (null: the budget alone)"
    )
    train: LegoLoopParams = section_field(LegoLoopParams)
    layerskip: bool = Field(
        True,
        description="also train a LayerSkip-style model (LEGO's architecture end to end, early-exit loss) on the same "
        "budget and route it by the same rule",
    )
    layerskip_exit_weight: float = Field(
        0.5, ge=0, description="weight of the LayerSkip-style model's early-exit loss (the final exit weighs 1)"
    )


class LegoEvalParams(StrictModel):
    """Test evaluation: teacher-forced metrics, greedy exact match and the exit-share trade-off curve."""

    batch_size: EvalBatchSize = 256
    max_new_tokens: GreedyTokens = 8
    tradeoff_exit_shares: list[float] = Field(
        default_factory=lambda: [0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9],
        description="exit shares (0..1) of the exit-share-vs-perplexity curve, each calibrated on val (0 and 1 always "
        "added); the routing threshold is chosen among them",
    )

    @model_validator(mode="after")
    def _check_shares(self) -> LegoEvalParams:
        check_each(
            "tradeoff_exit_shares", self.tradeoff_exit_shares, lambda share: 0 <= share <= 1, "share must be in [0, 1]"
        )
        return self


class LegoParams(StrictModel):
    """LEGO: shallow model (phase 1) → hard examples → upper block on the hard tokens (phase 2).

    Defaults are the seed's LEGOConfig (phase 1 lr 1e-3 patience 1, hard ratio 0.5, phase 2 lr 1e-4
    patience 3); params.yaml holds the values calibrated for the default pipeline.
    """

    model: LegoModelParams = section_field(LegoModelParams)
    phase1: LegoLoopParams = section_field(LegoLoopParams)
    hard_examples: LegoHardExampleParams = section_field(LegoHardExampleParams)
    phase2: LegoPhase2Params = section_field(LegoPhase2Params)
    baseline: LegoBaselineParams = section_field(LegoBaselineParams)
    eval: LegoEvalParams = section_field(LegoEvalParams)
    num_threads: int = Field(2, gt=0, description="torch CPU threads of every LEGO stage")

    def to_config(self, tokenizer: PreTrainedTokenizerBase) -> PretrainedConfig:
        """The phase-1 `LEGOConfig`: the shallow block's architecture, the tokenizer's vocabulary and special ids.

        Phase 2 grows it to `model.phase2_layers` (`LEGOForCausalLM.extend_from`); the training settings of
        both phases stay in this section, so the saved models' config.json holds the architecture only.
        """
        LEGOConfig = registered_config("lego")

        m = self.model
        return LEGOConfig(
            **hf_sizes(m, m.phase1_layers), intermediate_size=m.intermediate_size, **tokenizer_ids(tokenizer)
        )
