"""Typed settings of the four cascade stages (`cascade_pairs → limen → refiner → cascade_eval`).

Validator messages start with the offending key (`mix.div: ...`), the form `config.params.format_error`
turns into a full key path.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from cascadelab.config.base import SFTTrainParams, StrictModel, check_at_most, section_field
from cascadelab.config.fields import (
    CoarseAnswerTokens,
    CompletionTemperature,
    DecayFraction,
    GenerationBatchSize,
    GroupBatchesByTask,
    LoraAlpha,
    LoraDropout,
    LoraRank,
    PredictionSample,
    SaveSteps,
    StageThreads,
    WarmupSteps,
)
from cascadelab.config.transformer import InitializerRange, MLPSize

CascadeMode = Literal["normal", "coarse_only", "always_refine", "skip_coarse"]
CASCADE_MODES: tuple[CascadeMode, ...] = ("coarse_only", "always_refine", "normal", "skip_coarse")


# --------------------------------------------------------------------------------------------- cascade_pairs
class CrossFitSettings(StrictModel):
    """k-fold cross-fitting: a coarse model trained without fold i answers fold i (0 folds: off)."""

    folds: int = Field(
        0,
        ge=0,
        le=20,
        description="k >= 2: k coarse models (coarse_sft recipe), each answers its held-out fold (0: off)",
    )

    @model_validator(mode="after")
    def _not_one(self) -> CrossFitSettings:
        if self.folds == 1:
            raise ValueError("folds: must be 0 (off) or >= 2 (got 1)")
        return self


class PairsSettings(StrictModel):
    """How the frozen coarse model answers train/val prompts to make (coarse, gold) pairs."""

    num_samples: int = Field(4, ge=0, description="sampled answers per prompt, besides the greedy one")
    temperature: float = Field(1.2, gt=0, description="sampling temperature of the extra answers")
    batch_size: GenerationBatchSize = 256
    max_new_tokens: CoarseAnswerTokens = 12
    right_fraction: float | None = Field(
        0.5, ge=0, le=1, description="share of right coarse answers per task after balancing; null: natural ratio"
    )
    min_pairs_per_task: int = Field(64, ge=0, description="balancing never leaves a task with fewer pairs")
    balance_val: bool = Field(False, description="val keeps its natural ratio by default (LIMEN calibrates on it)")
    dedupe: bool = Field(True, description="drop repeated (prompt, coarse output) pairs")
    tasks: list[str] | None = Field(None, description="restrict to these task families; null: all")
    max_prompts_per_task: int | None = Field(
        500, gt=0, description="seeded subsample of each task's prompts per split (time budget); null: all"
    )
    cross_fit: CrossFitSettings = section_field(CrossFitSettings)
    num_threads: StageThreads = 2


# --------------------------------------------------------------------------------------------- limen
class LimenSettings(StrictModel):
    """The LIMEN gate: a calibrated 'output is wrong' classifier plus a rule layer and thresholds."""

    use_hidden: bool = Field(True, description="mean-pooled last hidden state of the frozen base model")
    use_task: bool = Field(
        False, description="one-hot of the router's predicted family among the features (never the record's label)"
    )
    blocked: list[str] = Field(default_factory=list, description="outputs containing any of these are refused")
    max_output_chars: int = Field(96, gt=0, description="longer outputs are refused as malformed")
    l2: float = Field(1e-2, ge=0, description="L2 penalty of the logistic regression (on standardised features)")
    max_iter: int = Field(200, gt=0, description="L-BFGS iterations")
    calibration: Literal["platt", "temperature", "none"] = Field(
        "platt", description="platt: p = σ(a·logit + b) fitted on val | temperature: a only | none: the raw logit"
    )
    break_rate_budget: float = Field(
        0.02, ge=0, le=1, description="max share of right val outputs the gate may send on (worst case: all broken)"
    )
    refined_threshold: float = Field(1.0, ge=0, le=1, description="approve a well-formed refined output below this")
    silence_threshold: float = Field(1.0, ge=0, le=1, description="no alternative below this tension: silence")
    silence_text: str = Field("", description="what the cascade answers when it stays silent")
    ece_bins: int = Field(10, gt=0, description="bins of the expected calibration error")
    batch_size: int = Field(256, gt=0, description="outputs per feature-extraction batch")
    num_threads: StageThreads = 2


# --------------------------------------------------------------------------------------------- refiner
class RefinerFormatSettings(StrictModel):
    """What the refiner reads and writes: `{prompt}[COARSE]{coarse}[REFINE]` → steps (or answer)."""

    target: Literal["steps", "answer"] = Field("steps", description="answer: direct re-emission (the baseline)")
    family_targets: dict[str, Literal["steps", "answer"]] = Field(
        default_factory=dict, description="per-family target overriding `target` (a family not named: `target`)"
    )
    use_coarse: bool = Field(
        True, description="true: the coarse draft fills its slot | false: the slot is left empty (the slow path alone)"
    )
    sampled_drafts: float = Field(
        0.5, ge=0, le=1, description="share of training items whose draft is a coarse sample (the rest: greedy)"
    )
    draft_temperature: float = Field(1.2, gt=0, description="sampling temperature of the sampled training drafts")
    repeat_prompt: bool = Field(False, description="repeat the prompt after [REFINE] (answer at coarse offsets)")
    max_coarse_chars: int = Field(32, gt=0, description="coarse outputs are cut to this length in the input")

    def target_of(self, task: str) -> Literal["steps", "answer"]:
        """The target a family's rows train on: its `family_targets` entry, else `target`."""
        return self.family_targets.get(task, self.target)


class RefinerTrainSettings(SFTTrainParams):
    """Teacher-forcing optimisation: `train_sft`'s settings with the refiner's defaults."""

    max_steps: int = Field(3000, gt=0, description="optimizer steps per refiner when family_steps does not name it")
    warmup_steps: WarmupSteps = 50
    decay_fraction: DecayFraction = 0.5
    save_steps: SaveSteps = 0


class RefinerLoraSettings(StrictModel):
    """The LoRA adapter of `mode: lora` (PEFT) on the coarse base."""

    r: LoraRank = 64
    alpha: LoraAlpha = 128
    dropout: LoraDropout = 0.0
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        min_length=1,
        description="module names that receive adapters",
    )


class SeparateRefinerSettings(StrictModel):
    """The small transformer of `mode: separate`: own layers, embeddings copied from the coarse model."""

    num_layers: int = Field(4, gt=0, description="decoder layers of the separate refiner")
    num_heads: int = Field(4, gt=0, description="attention heads of the separate refiner")
    intermediate_size: MLPSize = 512
    initializer_range: InitializerRange = 0.06
    freeze_embeddings: bool = Field(True, description="keep the shared coarse embeddings (and tied head) frozen")


class SelfImprovementSettings(StrictModel):
    """GRPO after teacher forcing: reward = verified(refined) − verified(coarse) − λ·tension + format."""

    max_steps: int = Field(200, gt=0, description="GRPO steps")
    batch_size: int = Field(8, gt=0, description="completions per GRPO step (a multiple of num_generations)")
    num_generations: int = Field(4, ge=2, description="completions sampled per prompt")
    learning_rate: float = Field(1e-5, gt=0, description="GRPO learning rate")
    temperature: CompletionTemperature = 1.0
    tension_weight: float = Field(
        0.2, ge=0, description="λ: weight of LIMEN's tension on the refined output in the reward"
    )
    format_weight: float = Field(0.1, ge=0, description="reward for a well-formed refined output")
    logging_steps: int = Field(20, gt=0, description="steps between two GRPO log rows")
    max_prompts: int = Field(2000, gt=0, description="refiner inputs drawn from the training data for the RL phase")

    @model_validator(mode="after")
    def _divisible(self) -> SelfImprovementSettings:
        if self.batch_size % self.num_generations:
            raise ValueError(
                f"batch_size: must be divisible by num_generations ({self.batch_size} % {self.num_generations})"
            )
        return self


class AdversarialSettings(StrictModel):
    """A discriminator (gold vs refined text) whose score joins the self-improvement reward."""

    weight: float = Field(0.2, ge=0, description="reward += weight · (P_disc(gold | refined) − 0.5)")
    disc_steps: int = Field(200, gt=0, description="discriminator training steps before RL")
    disc_hidden: int = Field(64, gt=0, description="hidden size of the discriminator")
    disc_learning_rate: float = Field(1e-3, gt=0, description="learning rate of the discriminator")


class ControlSettings(StrictModel):
    """The equal-compute control `coarse_more`: the coarse model trained further in its own format."""

    enabled: bool = Field(True, description="train the coarse_more control")
    budget: Literal["steps", "tokens"] = Field(
        "steps", description="steps: as many optimizer steps as the refiner(s); tokens: as many training tokens"
    )
    num_threads: int = Field(1, gt=0, description="torch threads of the control's training")


class RefinerSettings(StrictModel):
    """The refiner: architecture mode, training data, format, strategy and per-family routing/budgets."""

    mode: Literal["lora", "full", "separate"] = Field(
        "full",
        description="full: a fine-tuned copy of the coarse model | lora: a LoRA adapter | separate: own small model",
    )
    data: Literal["pairs", "fresh", "both"] = Field(
        "fresh", description="fresh: fresh gold items | pairs: cascade_pairs' (coarse, gold) pairs | both"
    )
    format: RefinerFormatSettings = section_field(RefinerFormatSettings)
    strategy: Literal["teacher_forcing", "self_improvement", "adversarial"] = Field(
        "teacher_forcing",
        description="teacher_forcing | self_improvement (GRPO after it) | adversarial (GRPO with a discriminator)",
    )
    mix: dict[str, float] = Field(
        default_factory=lambda: {"mul": 0.45, "word": 0.4, "add": 0.075, "sub": 0.075},
        description="training share per family (add/sub keep the base's arithmetic in word problems)",
    )
    route_tasks: list[str] = Field(
        default_factory=lambda: ["mul", "word"], description="families the cascade may send to the refiner"
    )
    fresh_per_cell: int = Field(20000, gt=0, description="fresh gold items per (family, difficulty)")
    fresh_difficulties: dict[str, list[int]] = Field(
        default_factory=dict, description="levels per family for fresh items; a family not listed: its corpus levels"
    )
    per_family: bool = Field(False, description="one refiner per routed family (one family at a time learns best)")
    family_steps: dict[str, int] = Field(default_factory=dict, description="per-family step budgets (per_family)")
    family_support: dict[str, list[str]] = Field(
        default_factory=dict,
        description="per routed family, the non-routed mix families trained beside it (not named: all of them)",
    )
    parallel: bool = Field(
        False, description="train each per-family refiner and the control in its own process (train.num_threads each)"
    )
    control: ControlSettings = section_field(ControlSettings)
    answer_baseline: bool = Field(
        False, description="also train the answer-target refiner (same mode, data, budget) for cascade_eval to compare"
    )
    draft_ablation: bool = Field(
        True,
        description="also train the refiner without the draft (use_coarse false; same items, steps, seed): "
        "skip_coarse and the draft ablation",
    )
    warmup_tasks: list[str] = Field(default_factory=list, description="curriculum warm-up families (none: mix)")
    group_batches_by_task: GroupBatchesByTask = True
    max_new_tokens: int = Field(48, gt=0, description="tokens generated per refined output")
    train: RefinerTrainSettings = section_field(RefinerTrainSettings)
    lora: RefinerLoraSettings = section_field(RefinerLoraSettings)
    separate: SeparateRefinerSettings = section_field(SeparateRefinerSettings)
    self_improvement: SelfImprovementSettings = section_field(SelfImprovementSettings)
    adversarial: AdversarialSettings = section_field(AdversarialSettings)

    @model_validator(mode="after")
    def _consistent(self) -> RefinerSettings:
        for name, weight in self.mix.items():
            if weight < 0:
                raise ValueError(f"mix.{name}: must be >= 0 (got {weight})")
        trained = {name for name, weight in self.mix.items() if weight > 0}
        if not trained:
            raise ValueError("mix: at least one weight must be > 0")
        for name in self.route_tasks:
            if name not in trained:
                raise ValueError(f"route_tasks: {name!r} is not trained (no weight > 0 in mix)")
        for name, steps in self.family_steps.items():
            if name not in self.route_tasks:
                raise ValueError(f"family_steps.{name}: not a routed family")
            if steps <= 0:
                raise ValueError(f"family_steps.{name}: must be > 0 (got {steps})")
            check_at_most("train.warmup_steps", self.train.warmup_steps, f"family_steps.{name}", steps)
        for name, support in self.family_support.items():
            if name not in self.route_tasks:
                raise ValueError(f"family_support.{name}: not a routed family")
            for other in support:
                if other not in trained or other in self.route_tasks:
                    raise ValueError(f"family_support.{name}: {other!r} is not a non-routed family of the mix")
        for name, levels in self.fresh_difficulties.items():
            if not levels or any(level not in (1, 2, 3) for level in levels):
                raise ValueError(f"fresh_difficulties.{name}: levels must be a non-empty list of 1, 2, 3")
        if self.per_family and self.mode == "lora":
            raise ValueError("per_family: not supported with mode lora (one adapter serves every family)")
        for name in self.format.family_targets:
            if name not in trained:
                raise ValueError(f"format.family_targets.{name}: not a trained family (no weight > 0 in mix)")
        if self.strategy == "adversarial" and "answer" in {self.format.target_of(t) for t in trained}:
            raise ValueError("strategy: adversarial needs target steps (the discriminator reads worked steps)")
        return self


# --------------------------------------------------------------------------------------------- cascade_eval
class CascadeSettings(StrictModel):
    """Inference of `CascadeTransformer`: lengths, passes, routing, cache."""

    max_refinement_steps: int = Field(1, ge=1, le=8, description="refiner passes; stops early when settled")
    coarse_max_new_tokens: CoarseAnswerTokens = 12
    refiner_max_new_tokens: int = Field(48, gt=0, description="tokens generated per refiner pass")
    batch_size: GenerationBatchSize = 256
    route_tasks: list[str] | None = Field(None, description="families sent to the refiner; null: the refiner's")
    threshold: float | None = Field(None, ge=0, le=1, description="coarse approval threshold; null: LIMEN's own")
    family_thresholds: dict[str, float] = Field(
        default_factory=dict, description="coarse approval threshold per family (a family not named: `threshold`)"
    )
    cache_size: int = Field(100_000, ge=0, description="cached refiner inputs (repeated coarse outputs); 0: off")


class CascadeEvalSettings(StrictModel):
    """The `cascade_eval` stage: modes, threshold recalibration, sweep resolution, text metrics."""

    cascade: CascadeSettings = section_field(CascadeSettings)
    modes: list[CascadeMode] = Field(
        default_factory=lambda: list(CASCADE_MODES),
        min_length=1,
        description="cascade modes evaluated (coarse_only is required: the compute reference)",
    )
    recalibrate_threshold: bool = Field(
        True, description="re-choose the gate threshold on val with the refiner's real outputs for the budget"
    )
    break_rate_budget: float = Field(
        0.02,
        ge=0,
        le=1,
        description="max share of right val outputs the recalibrated gate may send on (worst case: all broken)",
    )
    per_family_thresholds: bool = Field(
        False, description="recalibrate one threshold per routed family, the break budget shared between them"
    )
    choose_refined_threshold: bool = Field(
        True,
        description="choose LIMEN's refined-output threshold on val (best val EM); false: limen.refined_threshold",
    )
    sweep_points: int = Field(21, ge=2, description="thresholds in the accuracy-vs-compute sweep")
    traffic: dict[str, float] = Field(
        default_factory=dict,
        description="weight per family re-weighting the test metrics as a deployment's traffic (empty: test as is)",
    )
    text_metrics: bool = Field(True, description="BLEU/ROUGE of refined vs coarse (sacrebleu, rouge-score)")
    sample_predictions: PredictionSample = 64
    num_threads: StageThreads = 2

    @model_validator(mode="after")
    def _has_coarse_only(self) -> CascadeEvalSettings:
        if "coarse_only" not in self.modes:
            raise ValueError("modes: must include coarse_only (the reference for compute ratios)")
        return self
