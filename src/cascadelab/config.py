"""Typed schema of params.yaml: one pydantic model per section, validated before any work.

Loading stops at the first problem with one line naming the key path, e.g.
``params.yaml: coarse_sft.train.learning_rate: must be > 0 (got -1.0)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from cascadelab.cascade.settings import CascadeEvalSettings, LimenSettings, PairsSettings, RefinerSettings
from cascadelab.params_base import SFTTrainParams, StrictModel
from cascadelab.training.optimizers.settings import OptimizerSettings

TASK_FAMILIES = ("add", "sub", "mul", "expr", "reverse", "word")


class ParamsError(ValueError):
    """A params.yaml problem, reported as one line naming the key path."""


# --------------------------------------------------------------------------------------------- tracking
class TrackingParams(StrictModel):
    """Where and how stages log to MLflow."""

    experiment: str = Field("cascadelab", min_length=1)


# --------------------------------------------------------------------------------------------- prepare
class FamilyParams(StrictModel):
    """One task family of the generated corpus."""

    difficulties: list[int] = Field(default_factory=lambda: [1], min_length=1)

    @model_validator(mode="after")
    def _check_levels(self) -> FamilyParams:
        for level in self.difficulties:
            if not 1 <= level <= 3:
                raise ValueError(f"difficulties: each level must be 1, 2 or 3 (got {level})")
        return self


class SplitSizes(StrictModel):
    """Items per (family, difficulty) cell in each split; small families are capped by their size."""

    train: int = Field(4000, gt=0)
    val: int = Field(100, gt=0)
    test: int = Field(200, gt=0)


class UserDatasetParams(StrictModel):
    """A user's own question/answer data (local JSONL or a hub dataset), added as task `user`."""

    path: str | None = None
    hf_name: str | None = None
    hf_config: str | None = None
    question_field: str = "question"
    answer_field: str = "answer"
    answer_pattern: str = r"####\s*(-?[\d,\.]+)"
    val_fraction: float = Field(0.1, gt=0, lt=1)
    test_fraction: float = Field(0.1, gt=0, lt=1)

    @model_validator(mode="after")
    def _one_source(self) -> UserDatasetParams:
        if (self.path is None) == (self.hf_name is None):
            raise ValueError("set exactly one of path or hf_name")
        return self


class TokenizerParams(StrictModel):
    """Tokenizer trained on the train split with the `tokenizers` library."""

    kind: Literal["char", "bpe"] = "char"
    vocab_size: int = Field(512, ge=64)


class CodeTaskParams(StrictModel):
    """The `code` task family (written to data/code_tasks, apart from the corpus)."""

    enabled: bool = True
    levels: list[int] = Field(default_factory=lambda: [1, 2, 3], min_length=1)
    sizes: SplitSizes = Field(default_factory=lambda: SplitSizes(train=400, val=40, test=40))

    @model_validator(mode="after")
    def _check_levels(self) -> CodeTaskParams:
        for level in self.levels:
            if level not in (1, 2, 3):
                raise ValueError(f"levels: each level must be 1, 2 or 3 (got {level})")
        return self


class PrepareParams(StrictModel):
    """Corpus generation and tokenizer training."""

    families: dict[str, FamilyParams] = Field(
        default_factory=lambda: {name: FamilyParams() for name in TASK_FAMILIES}, min_length=1
    )
    sizes: SplitSizes = Field(default_factory=lambda: SplitSizes())
    answer_format: Literal["reversed", "plain"] = "reversed"
    user_dataset: UserDatasetParams | None = None
    tokenizer: TokenizerParams = Field(default_factory=lambda: TokenizerParams())
    code: CodeTaskParams = Field(default_factory=lambda: CodeTaskParams())

    @model_validator(mode="after")
    def _known_families(self) -> PrepareParams:
        for name in self.families:
            if name not in TASK_FAMILIES:
                raise ValueError(f"families.{name}: unknown task family (known: {', '.join(TASK_FAMILIES)})")
        return self


# --------------------------------------------------------------------------------------------- coarse_sft
class CausalLMParams(StrictModel):
    """Architecture of a decoder-only LM built from config (Llama or Qwen2 family)."""

    family: Literal["llama", "qwen2"] = "llama"
    hidden_size: int = Field(128, gt=0)
    num_layers: int = Field(4, gt=0)
    num_heads: int = Field(4, gt=0)
    intermediate_size: int = Field(512, gt=0)
    initializer_range: float = Field(0.06, gt=0)
    max_position_embeddings: int = Field(256, gt=0)

    @model_validator(mode="after")
    def _heads_divide(self) -> CausalLMParams:
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size: must be divisible by num_heads ({self.hidden_size} % {self.num_heads})")
        return self


class LoraParams(StrictModel):
    """Optional LoRA adapters through PEFT (for large base models)."""

    enabled: bool = False
    r: int = Field(16, gt=0)
    alpha: int = Field(32, gt=0)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])


class CurriculumParams(StrictModel):
    """Warm-up on easy families, then the full mix (STACK-NOTES: escape the add/sub plateau first)."""

    warmup_tasks: list[str] = Field(default_factory=lambda: ["add", "sub"])
    switch_loss: float = Field(0.1, gt=0)
    max_warmup_fraction: float = Field(0.6, ge=0, le=1)
    group_batches_by_task: bool = True


class EvalParams(StrictModel):
    """Evaluation on the test split."""

    batch_size: int = Field(256, gt=0)
    max_new_tokens: int = Field(12, gt=0)
    sample_predictions: int = Field(64, ge=0)


def default_mix() -> dict[str, float]:
    """Sampling weights of the task families after the curriculum's warm-up (the coarse recipe's mix)."""
    return {"add": 0.3, "sub": 0.3, "mul": 0.16, "expr": 0.08, "reverse": 0.08, "word": 0.08}


def check_mix(mix: dict[str, float]) -> None:
    """Raise ValueError naming the first bad weight of a task mix."""
    for name, weight in mix.items():
        if weight < 0:
            raise ValueError(f"mix.{name}: must be >= 0 (got {weight})")
    if sum(mix.values()) <= 0:
        raise ValueError("mix: at least one weight must be > 0")


class CoarseSFTParams(StrictModel):
    """The coarse model of the cascade: built from config (or a base model) and fine-tuned with TRL."""

    base_model: str | None = None
    model: CausalLMParams = Field(default_factory=lambda: CausalLMParams())
    train: SFTTrainParams = Field(default_factory=lambda: SFTTrainParams())
    curriculum: CurriculumParams = Field(default_factory=lambda: CurriculumParams())
    mix: dict[str, float] = Field(default_factory=default_mix)
    lora: LoraParams = Field(default_factory=lambda: LoraParams())
    eval: EvalParams = Field(default_factory=lambda: EvalParams())

    @model_validator(mode="after")
    def _check_mix(self) -> CoarseSFTParams:
        check_mix(self.mix)
        check_mix(self.mix)
        if self.lora.enabled and self.base_model is None:
            raise ValueError("lora.enabled: LoRA needs coarse_sft.base_model (a pretrained model to adapt)")
        return self


# --------------------------------------------------------------------------------------------- sigma_pretrain
# Kept equal to cascadelab.models.sigma.BITLINEAR_FAMILIES (a unit test checks), so that params load
# without importing the model code.
SigmaBitLinearFamily = Literal["mamba_in", "mamba_out", "mla_q", "mla_kv", "mla_out", "moe_routed", "moe_shared"]


class SigmaModelParams(StrictModel):
    """SigmaLLM architecture: a `SigmaConfig` preset, the usual knobs, and any other `SigmaConfig` argument.

    A knob left at null keeps the preset's value; vocabulary size and special-token ids always come
    from the corpus tokenizer.
    """

    preset: Literal["tiny", "small"] = "small"
    hidden_size: int | None = Field(None, gt=0)
    num_layers: int | None = Field(None, gt=0)
    mamba_ratio: int = Field(1, ge=0)
    attention_ratio: int = Field(1, ge=0)
    use_diff_attn: bool = True
    moe_num_routed_experts: int | None = Field(None, ge=0)
    moe_num_shared_experts: int | None = Field(None, ge=0)
    moe_top_k: int | None = Field(None, gt=0)
    moe_intermediate_size: int | None = Field(None, gt=0)
    moe_shared_intermediate_size: int | None = Field(None, gt=0)
    bitlinear_families: list[SigmaBitLinearFamily] = Field(default_factory=list)
    use_triton: bool = True
    initializer_range: float | None = Field(None, gt=0)
    overrides: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> SigmaModelParams:
        if self.mamba_ratio + self.attention_ratio == 0:
            raise ValueError("mamba_ratio: mamba_ratio and attention_ratio cannot both be 0")
        for key in ("vocab_size", "pad_token_id", "bos_token_id", "eos_token_id"):
            if key in self.overrides:
                raise ValueError(f"overrides.{key}: set from the corpus tokenizer, not from params")
        return self

    def config_kwargs(self) -> dict[str, Any]:
        """`SigmaConfig.from_preset(preset, **kwargs)` keyword arguments: the set knobs, then `overrides`."""
        knobs = self.model_dump(exclude={"preset", "overrides", "num_layers"}, exclude_none=True)
        if self.num_layers is not None:
            knobs["num_hidden_layers"] = self.num_layers
        return {**knobs, **self.overrides}


class InstantParams(StrictModel):
    """The INSTANT memory plan applied before the first training forward (chunked CE always on)."""

    chunk_size: int = Field(1024, gt=0)
    checkpoint_blocks: bool = False


# The optimizer block (name + per-optimizer settings) lives beside the optimizers it configures.
SigmaOptimizerParams = OptimizerSettings


class SigmaTrainParams(StrictModel):
    """The pre-training loop, shared by SigmaLLM and the baseline (same batches, same token budget)."""

    max_steps: int = Field(2400, gt=0)
    batch_size: int = Field(16, gt=0)
    warmup_steps: int = Field(100, ge=0)
    decay_fraction: float = Field(0.2, ge=0, le=1)
    max_grad_norm: float = Field(1.0, gt=0)
    logging_steps: int = Field(50, gt=0)
    eval_steps: int = Field(0, ge=0)
    eval_records: int = Field(256, gt=0)
    num_threads: int = Field(1, gt=0)
    parallel_baseline: bool = True
    group_batches_by_task: bool = True
    checkpoint_steps: int = Field(0, ge=0)  # resumable checkpoint every N steps (0: none); a multiple of logging_steps
    keep_checkpoints: int = Field(2, gt=0)  # newest checkpoints kept


class SigmaFeatureParams(StrictModel):
    """Trainer features, each counted in metrics.jsonl (`feature_<name>_enabled` / `_effective_calls`)."""

    c3o_credit: bool = False  # C3O's per-group credit from each group's share of the loss decrease
    integrity_guards: bool = False  # skip non-finite steps, restore after N in a row, roll back loss spikes
    prefetch: bool = False  # batches built by a background thread into a bounded queue
    crash_report: bool = False  # an unhandled exception writes <out>/errors/<UTC>.json


class SigmaGuardParams(StrictModel):
    """Integrity-guard thresholds (used when `features.integrity_guards` is on)."""

    nonfinite_restore_after: int = Field(3, gt=0)  # this many non-finite steps in a row restore the last good state
    spike_factor: float = Field(5.0, gt=1)  # a loss above factor x the running median is a spike
    spike_window: int = Field(50, gt=1)  # steps in the running median
    spike_lr_factor: float = Field(0.5, gt=0, lt=1)  # a rollback multiplies the learning rate by this
    snapshot_steps: int = Field(50, gt=0)  # how often the last good state is remembered


class SigmaStreamParams(StrictModel):
    """A streamed Hugging Face dataset's text field, mixed into the corpus batches (`data.source: hybrid`)."""

    path: str  # hub id, local dataset folder, or a builder name such as `json` (with data_files)
    name: str | None = None  # dataset configuration
    split: str = "train"
    data_files: str | list[str] | None = None
    text_field: str = "text"
    weight: float = Field(0.2, ge=0, le=1)  # share of batches drawn from the stream
    max_length: int = Field(128, gt=1)  # tokens per streamed text (EOS included)
    shuffle_buffer: int = Field(1000, ge=0)  # seeded shuffle buffer (0: stream order)


class SigmaDataParams(StrictModel):
    """The training-batch pipeline: its source, and the prefetch used when `features.prefetch` is on."""

    prefetch_batches: int = Field(8, gt=0)  # bound of the prefetch queue
    source: Literal["local", "hybrid"] = "local"  # hybrid: the corpus mixed with `stream` (the seed's backend)
    bootstrap_batches: int = Field(50, ge=0)  # hybrid: the first batches always come from the corpus
    stream: SigmaStreamParams | None = None

    @model_validator(mode="after")
    def _stream_for_hybrid(self) -> SigmaDataParams:
        if self.source == "hybrid" and self.stream is None:
            raise ValueError("stream: required when source is hybrid (set stream.path to a dataset)")
        return self


SIGMA_PROFILES: dict[str, dict[str, Any]] = {
    # no trainer feature, plain AdamW: the reference loop
    "minimal": {
        "optimizer": {"name": "adamw"},
        "features": {"c3o_credit": False, "integrity_guards": False, "prefetch": False, "crash_report": False},
    },
    # the stage's default: the safety features, the optimizer the benchmark supports
    "standard": {
        "optimizer": {"name": "adamw"},
        "features": {"c3o_credit": False, "integrity_guards": True, "prefetch": True, "crash_report": True},
    },
    # every feature of the model and the trainer (the proof runs this)
    "full": {
        "optimizer": {"name": "c3o"},
        "features": {"c3o_credit": True, "integrity_guards": True, "prefetch": True, "crash_report": True},
        "model": {"bitlinear_families": list(SigmaBitLinearFamily.__args__)},  # type: ignore[attr-defined]
    },
}
SigmaProfile = Literal["minimal", "standard", "full"]


def _merge_under(explicit: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """`defaults` deep-merged under `explicit`: a key set explicitly always wins."""
    merged = dict(defaults)
    for key, value in explicit.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge_under(value, merged[key])
        else:
            merged[key] = value
    return merged


def expand_profile(raw: dict[str, Any]) -> dict[str, Any]:
    """A `sigma_pretrain` mapping with its profile's settings filled in where the mapping sets none."""
    name = raw.get("profile", "standard")
    if name not in SIGMA_PROFILES:
        return raw  # the Literal on `profile` reports it
    return _merge_under(raw, SIGMA_PROFILES[name])


class SigmaPretrainParams(StrictModel):
    """Pre-train SigmaLLM on the corpus and a same-size Llama baseline on the same batches; evaluate both.

    `profile` expands into explicit settings before validation (:data:`SIGMA_PROFILES`; keys set in
    params.yaml win), so the validated section is exactly what runs and what is logged.
    """

    profile: SigmaProfile = "standard"
    model: SigmaModelParams = Field(default_factory=lambda: SigmaModelParams())
    instant: InstantParams = Field(default_factory=lambda: InstantParams())
    optimizer: SigmaOptimizerParams = Field(default_factory=lambda: SigmaOptimizerParams())
    features: SigmaFeatureParams = Field(default_factory=lambda: SigmaFeatureParams())
    guards: SigmaGuardParams = Field(default_factory=lambda: SigmaGuardParams())
    data: SigmaDataParams = Field(default_factory=lambda: SigmaDataParams())
    train: SigmaTrainParams = Field(default_factory=lambda: SigmaTrainParams())
    mix: dict[str, float] = Field(
        default_factory=lambda: {"add": 0.1, "sub": 0.1, "mul": 0.15, "expr": 0.2, "reverse": 0.2, "word": 0.25}
    )
    baseline: CausalLMParams = Field(default_factory=lambda: CausalLMParams(intermediate_size=576))
    baseline_param_tolerance: float = Field(0.05, ge=0)
    eval: EvalParams = Field(default_factory=lambda: EvalParams())

    @model_validator(mode="before")
    @classmethod
    def _expand_profile(cls, data: Any) -> Any:
        return expand_profile(data) if isinstance(data, dict) else data

    @model_validator(mode="after")
    def _check(self) -> SigmaPretrainParams:
        check_mix(self.mix)
        check_sigma_compatibility(self)
        return self


def check_sigma_compatibility(section: SigmaPretrainParams | SigmaRLParams) -> None:
    """Combinations of the SIGMA loop's settings that cannot work: a ValueError naming the keys."""
    opt, train = section.optimizer, section.train
    if section.features.c3o_credit and opt.name != "c3o":
        raise ValueError(f"features.c3o_credit: true needs optimizer.name: c3o (got {opt.name})")
    if section.features.c3o_credit and opt.c3o.credit_interval > train.max_steps:
        raise ValueError(
            f"optimizer.c3o.credit_interval: {opt.c3o.credit_interval} is more than train.max_steps "
            f"({train.max_steps}), so the credit would never update"
        )
    if train.checkpoint_steps % train.logging_steps:
        raise ValueError(
            f"train.checkpoint_steps: {train.checkpoint_steps} must be a multiple of train.logging_steps "
            f"({train.logging_steps}), so a checkpoint never splits a logging window"
        )
    if train.warmup_steps >= train.max_steps:
        raise ValueError(
            f"train.warmup_steps: {train.warmup_steps} must be less than train.max_steps ({train.max_steps})"
        )


def check_sigma_runtime(section: SigmaPretrainParams, cuda_available: bool) -> None:
    """Startup checks against this machine (ParamsError, one line naming the key)."""
    backend = section.optimizer.gnprox.backend
    if section.optimizer.name == "gnprox" and backend == "triton" and not cuda_available:
        raise ParamsError(
            "params.yaml: sigma_pretrain.optimizer.gnprox.backend: triton needs a CUDA device (none available); "
            "use auto or ref"
        )


# --------------------------------------------------------------------------------------------- sigma_rl
class SigmaRLFeatureParams(SigmaFeatureParams):
    """The loop's trainer features plus the RL subsystems, each counted in metrics.jsonl."""

    code_rl: bool = True  # code tasks in RL, verified by running the model's code in the sandbox
    asym_verify: bool = True  # a cheap-check failure is final (never escalated); off: every output gets the full check
    causal_replay: bool = True  # prompts of high-advantage samples re-enter later RL batches by priority
    auto_mix: bool = True  # the RL share adapts to held-out reward progress every eval window
    meta_loop: bool = (
        False  # Uroboros: every window sets the lr factor and the RL-share change (replaces auto_mix's rule)
    )
    research_log: bool = False  # one (hypothesis, change, expected, measured) cycle per window, JSONL artifact
    self_improver: bool = False  # every window: new template problems, the model's verified answers become LM rows
    counterfactual_credit: bool = False  # C3O credit from reverting each layer's last RL update on a probe batch
    fractal_nas: bool = False  # structural-variant trials at a tiny budget after the run (winner reported only)
    draft_heads: bool = False  # draft heads trained on the final model: acceptance rate and speed-up measured


class GRPOParams(StrictModel):
    """One GRPO (or GSPO) update through TRL's GRPOTrainer."""

    prompts_per_step: int = Field(2, gt=0)  # distinct prompts per update; the batch is prompts x num_generations
    num_generations: int = Field(4, ge=2)
    max_completion_length: int = Field(20, gt=0)
    temperature: float = Field(1.0, gt=0)
    importance_sampling_level: Literal["token", "sequence"] = "token"  # sequence: GSPO
    beta: float = Field(0.0, ge=0)  # KL coefficient; 0 loads no reference model
    epsilon: float = Field(0.2, gt=0)
    code_share: float = Field(0.5, ge=0, le=1)  # share of RL prompts from the code tasks (ignored without code_rl)


class AutoMixParams(StrictModel):
    """The RL/LM mix: the share of loop steps that also take an RL update, moved by held-out reward."""

    initial_share: float = Field(0.3, ge=0, le=1)
    min_share: float = Field(0.1, ge=0, le=1)
    max_share: float = Field(0.6, ge=0, le=1)
    step: float = Field(0.1, gt=0, le=1)  # change of the share per decision
    min_gain: float = Field(0.005, ge=0)  # held-out reward gain below this counts as a plateau
    lm_loss_tolerance: float = Field(0.05, ge=0)  # relative rise of the LM val loss that sends the mix back to LM

    @model_validator(mode="after")
    def _check(self) -> AutoMixParams:
        if not self.min_share <= self.initial_share <= self.max_share:
            raise ValueError(
                f"initial_share: {self.initial_share} must lie within [min_share, max_share] "
                f"([{self.min_share}, {self.max_share}])"
            )
        return self


class ReplayParams(StrictModel):
    """Causal replay of high-advantage samples."""

    capacity: int = Field(64, gt=0)
    alpha: float = Field(1.0, ge=0)
    min_advantage: float = 0.0
    staleness_decay: float = Field(0.99, gt=0, le=1)
    per_step: int = Field(1, ge=0)  # replayed prompts per RL update (each replaces a fresh prompt)


class SandboxParams(StrictModel):
    """Limits of one sandboxed run of model-written code."""

    wall_seconds: float = Field(2.0, gt=0)
    cpu_seconds: int = Field(2, gt=0)
    memory_mb: int = Field(256, gt=0)


class EvolutionParams(StrictModel):
    """Budgets of the evolution subsystems (each switched in `features`)."""

    self_improver_problems: int = Field(16, gt=0)  # new problems per window
    nas_trials: int = Field(4, gt=0)  # coarse trials (one round)
    nas_steps: int = Field(20, gt=0)  # training steps per trial
    draft_num_heads: int = Field(2, gt=0)
    draft_steps: int = Field(100, gt=0)
    draft_learning_rate: float = Field(1.0e-3, gt=0)
    draft_prompts: int = Field(32, gt=0)  # test prompts the speculative decoding is measured on


class RLEvalParams(StrictModel):
    """Held-out reward (val) and the before/after test evaluation."""

    heldout_math: int = Field(64, gt=0)  # val prompts of the corpus in the held-out reward
    heldout_code: int = Field(40, gt=0)  # val prompts of the code tasks
    batch_size: int = Field(256, gt=0)
    max_new_tokens: int = Field(20, gt=0)  # a level-2 lambda is 16 characters + EOS
    sample_predictions: int = Field(32, ge=0)
    test_records: int = Field(0, ge=0)  # first N test records of each kind before/after (0: all)


class SigmaRLTrainParams(SigmaTrainParams):
    """The `sigma_rl` loop (defaults for RL on the pretrained model)."""

    max_steps: int = Field(400, gt=0)
    warmup_steps: int = Field(0, ge=0)
    decay_fraction: float = Field(0.2, ge=0, le=1)
    eval_steps: int = Field(100, ge=0)
    num_threads: int = Field(2, gt=0)
    parallel_baseline: bool = False  # unused by sigma_rl


# sigma_rl's evolution subsystems (switched and counted by training/sigma_rl_evolution.py)
RL_EVOLUTION_SWITCHES = ("meta_loop", "research_log", "self_improver", "counterfactual_credit", "fractal_nas",
                         "draft_heads")  # fmt: skip
_RL_SWITCHES = ("code_rl", "causal_replay", "auto_mix", *RL_EVOLUTION_SWITCHES)
_RL_STANDARD = ("code_rl", "causal_replay", "auto_mix", "meta_loop", "research_log", "self_improver", "draft_heads")
SIGMA_RL_PROFILES: dict[str, dict[str, Any]] = {
    "minimal": {
        "optimizer": {"name": "adamw"},
        "features": {
            **SIGMA_PROFILES["minimal"]["features"],
            "asym_verify": True,
            **dict.fromkeys(_RL_SWITCHES, False),
        },
    },
    # what fits the stage's 4-minute budget: every RL subsystem but the C3O-only credit and NAS
    "standard": {
        "optimizer": {"name": "adamw"},
        "features": {
            **SIGMA_PROFILES["standard"]["features"],
            "asym_verify": True,
            **{name: name in _RL_STANDARD for name in _RL_SWITCHES},
        },
    },
    # every RL subsystem and trainer feature (the proof runs this)
    "full": {
        "optimizer": {"name": "c3o"},
        "features": {**SIGMA_PROFILES["full"]["features"], "asym_verify": True, **dict.fromkeys(_RL_SWITCHES, True)},
    },
}


class SigmaRLParams(StrictModel):
    """RL on the pretrained SigmaLLM (GRPO/GSPO through TRL, verifier rewards) mixed with LM steps.

    `profile` expands like `sigma_pretrain`'s (:data:`SIGMA_RL_PROFILES`; keys set in params.yaml win).
    """

    profile: SigmaProfile = "standard"
    optimizer: SigmaOptimizerParams = Field(default_factory=lambda: SigmaOptimizerParams())
    features: SigmaRLFeatureParams = Field(default_factory=lambda: SigmaRLFeatureParams())
    guards: SigmaGuardParams = Field(default_factory=lambda: SigmaGuardParams())
    data: SigmaDataParams = Field(default_factory=lambda: SigmaDataParams())
    instant: InstantParams = Field(default_factory=lambda: InstantParams())
    train: SigmaRLTrainParams = Field(default_factory=lambda: SigmaRLTrainParams())
    mix: dict[str, float] = Field(
        default_factory=lambda: {
            "add": 0.1,
            "sub": 0.1,
            "mul": 0.1,
            "expr": 0.1,
            "reverse": 0.1,
            "word": 0.1,
            "code": 0.4,
        }
    )
    grpo: GRPOParams = Field(default_factory=lambda: GRPOParams())
    auto_mix: AutoMixParams = Field(default_factory=lambda: AutoMixParams())
    replay: ReplayParams = Field(default_factory=lambda: ReplayParams())
    sandbox: SandboxParams = Field(default_factory=lambda: SandboxParams())
    format_weight: float = Field(0.1, ge=0, lt=1)  # reward share of a well-formed answer
    eval: RLEvalParams = Field(default_factory=lambda: RLEvalParams())
    evolution: EvolutionParams = Field(default_factory=lambda: EvolutionParams())

    @model_validator(mode="before")
    @classmethod
    def _expand_profile(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        name = data.get("profile", "standard")
        return _merge_under(data, SIGMA_RL_PROFILES[name]) if name in SIGMA_RL_PROFILES else data

    @model_validator(mode="after")
    def _check(self) -> SigmaRLParams:
        check_mix(self.mix)
        if self.train.eval_steps == 0:
            raise ValueError("train.eval_steps: must be > 0 (the held-out reward and the mix are judged per window)")
        if self.features.counterfactual_credit and self.optimizer.name != "c3o":
            raise ValueError(
                f"features.counterfactual_credit: true needs optimizer.name: c3o (got {self.optimizer.name})"
            )
        check_sigma_compatibility(self)
        return self


# --------------------------------------------------------------------------------------------- lego
class LegoModelParams(StrictModel):
    """Width of the LEGO model and its depth: the causal phase-1 block, then the full depth of phase 2."""

    hidden_size: int = Field(128, gt=0)
    num_heads: int = Field(4, gt=0)
    intermediate_size: int = Field(512, gt=0)
    phase1_layers: int = Field(2, gt=0)
    phase2_layers: int = Field(4, gt=0)
    initializer_range: float = Field(0.06, gt=0)
    max_position_embeddings: int = Field(256, gt=0)

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


class LegoLoopParams(StrictModel):
    """A causal training run with early stopping on val loss (phase 1, and the full-depth baseline)."""

    learning_rate: float = Field(1e-3, gt=0)
    patience: int = Field(1, ge=0)
    batch_size: int = Field(32, gt=0)
    max_epochs: int = Field(20, gt=0)
    max_steps: int | None = Field(None, gt=0)
    eval_every: int | None = Field(200, gt=0)
    eval_batch_size: int = Field(256, gt=0)
    warmup_steps: int = Field(100, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    grad_clip: float | None = Field(1.0, gt=0)
    log_every: int = Field(50, gt=0)


class LegoHardExampleParams(StrictModel):
    """Threshold on val so that `hard_example_ratio` of its response tokens fall below; rows from train."""

    hard_example_ratio: float = Field(0.5, gt=0, lt=1)
    max_train_rows: int = Field(200_000, gt=0)
    max_val_rows: int = Field(20_000, gt=0)
    batch_size: int = Field(256, gt=0)


class LegoPhase2Params(StrictModel):
    """The upper block trained on the hard examples, lower block frozen; routed evaluation on test."""

    learning_rate: float = Field(1e-4, gt=0)
    patience: int = Field(3, ge=0)
    batch_size: int = Field(256, gt=0)
    max_epochs: int = Field(20, gt=0)
    grad_clip: float | None = Field(1.0, gt=0)
    exit_share: float | None = Field(None, gt=0, lt=1)


class LegoBaselineParams(StrictModel):
    """The standard causal model of the full depth, trained from scratch for comparison.

    `budget: compute` gives it LEGO's training FLOPs (phase 1 + hard-example collection + phase 2);
    `budget: tokens` gives it LEGO's supervised tokens (phase-1 tokens + phase-2 hard-example rows).
    `max_train_tokens` caps either.
    """

    budget: Literal["compute", "tokens"] = "compute"
    max_train_tokens: int | None = Field(None, gt=0)
    train: LegoLoopParams = Field(default_factory=lambda: LegoLoopParams())


class LegoEvalParams(StrictModel):
    """Test evaluation: teacher-forced metrics, greedy exact match and the exit-share trade-off curve."""

    batch_size: int = Field(256, gt=0)
    max_new_tokens: int = Field(8, gt=0)
    tradeoff_exit_shares: list[float] = Field(default_factory=lambda: [0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9])

    @model_validator(mode="after")
    def _check_shares(self) -> LegoEvalParams:
        for share in self.tradeoff_exit_shares:
            if not 0 <= share <= 1:
                raise ValueError(f"tradeoff_exit_shares: each share must be in [0, 1] (got {share})")
        return self


class LegoParams(StrictModel):
    """LEGO: shallow model (phase 1) → hard examples → upper block on the hard tokens (phase 2).

    Defaults are the seed's LEGOConfig (phase 1 lr 1e-3 patience 1, hard ratio 0.5, phase 2 lr 1e-4
    patience 3); params.yaml holds the values calibrated for the default pipeline.
    """

    model: LegoModelParams = Field(default_factory=lambda: LegoModelParams())
    phase1: LegoLoopParams = Field(default_factory=lambda: LegoLoopParams())
    hard_examples: LegoHardExampleParams = Field(default_factory=lambda: LegoHardExampleParams())
    phase2: LegoPhase2Params = Field(default_factory=lambda: LegoPhase2Params())
    baseline: LegoBaselineParams = Field(default_factory=lambda: LegoBaselineParams())
    eval: LegoEvalParams = Field(default_factory=lambda: LegoEvalParams())
    num_threads: int = Field(2, gt=0)


# --------------------------------------------------------------------------------------------- hybrid_rnn
class HybridRNNModelParams(StrictModel):
    """A named size of the hybrid RNN-Transformer, with any of its sizes overridden (None keeps the preset's)."""

    preset: Literal["small", "seed", "tiny"] = "small"
    context: Literal["sequence", "pooled"] = "sequence"
    initializer_range: float = Field(0.06, gt=0)
    encoder_embedding_residual: bool | None = None
    d_model: int | None = Field(None, gt=0)
    encoder_rnn_layers: int | None = Field(None, gt=0)
    encoder_rnn_hidden_size: int | None = Field(None, gt=0)
    encoder_attention_heads: int | None = Field(None, gt=0)
    decoder_layers: int | None = Field(None, gt=0)
    decoder_attention_heads: int | None = Field(None, gt=0)
    decoder_ffn_dim: int | None = Field(None, gt=0)
    max_position_embeddings: int | None = Field(None, gt=0)
    dropout: float | None = Field(None, ge=0, lt=1)

    def config_overrides(self) -> dict[str, Any]:
        """The `HybridRNNConfig` fields set here (all but the preset name and the unset sizes)."""
        return {key: value for key, value in self.model_dump(exclude={"preset"}).items() if value is not None}


class HybridRNNTrainParams(StrictModel):
    """Teacher-forced training of the hybrid model: steps, WSD schedule, early stopping on val loss."""

    max_steps: int = Field(4000, gt=0)
    batch_size: int = Field(16, gt=0)
    learning_rate: float = Field(1e-3, gt=0)
    warmup_steps: int = Field(100, ge=0)
    decay_fraction: float = Field(0.2, ge=0, le=1)
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    logging_steps: int = Field(50, gt=0)
    eval_steps: int = Field(500, gt=0)
    patience: int = Field(4, ge=1)
    min_delta: float = Field(0.0, ge=0)
    eval_batch_size: int = Field(256, gt=0)
    num_threads: int = Field(1, gt=0)


class SamplingParams(StrictModel):
    """Sampled decoding: temperature, top-k (0 = off) and nucleus top-p (1.0 = off)."""

    temperature: float = Field(0.7, gt=0)
    top_k: int = Field(0, ge=0)
    top_p: float = Field(0.9, gt=0, le=1)


class Seq2SeqEvalParams(EvalParams):
    """Evaluation on the test split with greedy, sampled and beam-search decoding."""

    num_beams: int = Field(4, ge=2)
    sampling: SamplingParams = Field(default_factory=lambda: SamplingParams())


class HybridRNNParams(StrictModel):
    """The hybrid RNN-Transformer (issue 6): biLSTM encoder, Transformer decoder, trained on prompt→response."""

    model: HybridRNNModelParams = Field(default_factory=lambda: HybridRNNModelParams())
    train: HybridRNNTrainParams = Field(default_factory=lambda: HybridRNNTrainParams())
    curriculum: CurriculumParams = Field(default_factory=lambda: CurriculumParams())
    mix: dict[str, float] = Field(default_factory=default_mix)
    eval: Seq2SeqEvalParams = Field(default_factory=lambda: Seq2SeqEvalParams())

    @model_validator(mode="after")
    def _check_mix(self) -> HybridRNNParams:
        check_mix(self.mix)
        return self


# --------------------------------------------------------------------------------------------- acoc
# The ACOC library (models/acoc/, training/acoc_trainer.py) takes these classes as its settings, so that
# params load without importing the model code.
class ACOCModelParams(StrictModel):
    """The initial ACOC architecture: attention sizes, initial experts per layer, expert width, top-k."""

    hidden_size: int = Field(64, gt=0)
    num_layers: int = Field(2, gt=0)
    num_heads: int = Field(4, gt=0)
    initial_experts: int = Field(1, gt=0)
    expert_width: int = Field(16, gt=0)
    top_k: int = Field(0, ge=0, description="experts per token; 0 mixes all experts densely")
    initializer_range: float = Field(0.06, gt=0)
    gate_init: float = Field(3.0, description="initial gate logit (sigmoid(3) = 0.95)")
    max_position_embeddings: int = Field(128, gt=0)

    @model_validator(mode="after")
    def _heads_divide(self) -> ACOCModelParams:
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size: must be divisible by num_heads ({self.hidden_size} % {self.num_heads})")
        return self


class GrowthParams(StrictModel):
    """When and how the ACOC model grows, and when experts are pruned or merged."""

    kind: Literal["auto", "split", "widen"] = Field("auto", description="auto: split, then widen")
    max_experts: int = Field(4, gt=0, description="per layer")
    max_width: int = Field(256, gt=0, description="per expert")
    widen_by: int = Field(16, gt=0)
    split_noise: float = Field(0.1, ge=0, description="zero-sum ε on the split pair's down projections (× RMS)")
    all_layers: bool = Field(True, description="grow every layer at once (else only the most saturated layer)")
    stagnation_tol: float = Field(0.05, ge=0, description="stagnates below this gain")
    saturation_threshold: float = Field(0.3, ge=0, le=1)
    min_signals: int = Field(2, ge=1, le=3, description="signals needed to expand")
    prune_usage: float = Field(0.02, ge=0, description="load × gate under which an expert counts as unused")
    prune_patience: int = Field(2, gt=0, description="cycles an expert must stay unused before it is pruned")
    consolidate_threshold: float = Field(0.9, gt=0, le=1, description="merge at this cosine")
    consolidate_min_age: int = Field(2, ge=0, description="cycles an expert lives before it may be merged")


class WarmupParams(StrictModel):
    """Post-expansion warmup: a higher learning rate for the new tensors and forced routing to new experts."""

    steps: int = Field(100, ge=0)
    lr_multiplier: float = Field(10.0, gt=0)
    force_share: float = Field(0.3, ge=0, le=1)


class SaturationParams(StrictModel):
    """How the per-expert saturation metrics are measured and combined."""

    batches: int = Field(4, gt=0, description="batches measured per cycle")
    flat_eps: float = Field(0.05, gt=0, description="|act'| below this counts as saturated")
    dead_eps: float = Field(1e-3, ge=0, description="a unit never above this on routed tokens is dead")
    grad_ref: float = Field(0.01, gt=0, description="relative gradient norm that scores 0.5")
    weight_grad: float = Field(1.0, ge=0)
    weight_saturation: float = Field(1.0, ge=0)
    weight_dead: float = Field(1.0, ge=0)
    weight_variance: float = Field(1.0, ge=0)
    weight_load: float = Field(1.0, ge=0)


class VoteParams(StrictModel):
    """The variant vote and the soup merge."""

    variants: int = Field(5, gt=0)
    noise: float = Field(0.02, ge=0, description="delta std as a fraction of each tensor's RMS")
    ratio: float = Field(0.95, gt=0, le=1, description="vote expand below ratio × mean(last scores)")
    window: int = Field(5, gt=0)
    merge_top: int = Field(3, gt=0, description="deltas averaged into the soup")


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
    fisher_batches: int = Field(8, gt=0)
    replay_tokens: int = Field(512, ge=0, description="old-task router inputs kept per layer")
    replay_weight: float = Field(1.0, ge=0)
    old_task_share: float = Field(0.25, ge=0, le=1, description="older tasks' share of batches")
    expand_on_new_task: bool = Field(True, description="split the most loaded expert for a new task family")


class ACOCParams(StrictModel):
    """An ACOC run (issue 5): tasks and their first cycle, the cycle loop, and every component's parameters."""

    tasks: dict[str, int] = Field(
        default_factory=lambda: {"add": 0, "sub": 3},
        description="task key (family `add` or cell `mul1`) -> cycle at which it enters training",
    )
    cycles: int = Field(8, gt=0)
    steps_per_cycle: int = Field(500, gt=0)
    batch_size: int = Field(16, gt=0)
    learning_rate: float = Field(1e-3, gt=0)
    lr_warmup_steps: int = Field(100, ge=0)
    decay_fraction: float = Field(0.2, ge=0, le=1, description="linear decay to 0 over the last share of steps")
    max_grad_norm: float = Field(1.0, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    val_items_per_task: int = Field(100, gt=0)
    test_items_per_task: int = Field(200, gt=0)
    eval_batch_size: int = Field(256, gt=0)
    max_new_tokens: int = Field(12, gt=0)
    log_every: int = Field(50, gt=0)
    num_threads: int = Field(2, gt=0)
    baselines: bool = Field(True, description="also train the static initial-size and final-size models")
    model: ACOCModelParams = Field(default_factory=lambda: ACOCModelParams())
    growth: GrowthParams = Field(default_factory=lambda: GrowthParams())
    warmup: WarmupParams = Field(default_factory=lambda: WarmupParams())
    saturation: SaturationParams = Field(default_factory=lambda: SaturationParams())
    vote: VoteParams = Field(default_factory=lambda: VoteParams())
    penalty: PenaltyParams = Field(default_factory=lambda: PenaltyParams())
    continual: ContinualParams = Field(default_factory=lambda: ContinualParams())

    @model_validator(mode="after")
    def _check_schedule(self) -> ACOCParams:
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


# --------------------------------------------------------------------------------------------- root
ReportStage = Literal["coarse_sft", "cascade_eval", "hybrid_rnn", "lego_phase2", "acoc", "sigma_pretrain", "sigma_rl"]
DEFAULT_REPORT_STAGES: list[ReportStage] = [
    "coarse_sft", "cascade_eval", "hybrid_rnn", "lego_phase2", "acoc", "sigma_pretrain", "sigma_rl"
]  # fmt: skip


class ReportParams(StrictModel):
    """The final report: which stages' models go into the comparison table, in that order."""

    title: str = "cascadelab: every model on one test split"
    stages: list[ReportStage] = Field(
        default_factory=lambda: list(DEFAULT_REPORT_STAGES),
        min_length=1,
    )


class Params(StrictModel):
    """The whole params.yaml: the global seed plus one section per stage."""

    seed: int = Field(1234, ge=0)
    tracking: TrackingParams = Field(default_factory=lambda: TrackingParams())
    prepare: PrepareParams = Field(default_factory=PrepareParams)
    coarse_sft: CoarseSFTParams = Field(default_factory=CoarseSFTParams)
    sigma_pretrain: SigmaPretrainParams = Field(default_factory=SigmaPretrainParams)
    sigma_rl: SigmaRLParams = Field(default_factory=SigmaRLParams)
    lego: LegoParams = Field(default_factory=LegoParams)
    hybrid_rnn: HybridRNNParams = Field(default_factory=HybridRNNParams)
    acoc: ACOCParams = Field(default_factory=ACOCParams)
    cascade_pairs: PairsSettings = Field(default_factory=PairsSettings)
    limen: LimenSettings = Field(default_factory=LimenSettings)
    refiner: RefinerSettings = Field(default_factory=RefinerSettings)
    cascade_eval: CascadeEvalSettings = Field(default_factory=CascadeEvalSettings)
    report: ReportParams = Field(default_factory=ReportParams)

    @model_validator(mode="after")
    def _cascade_families(self) -> Params:
        for key, names in (
            ("cascade_pairs.tasks", self.cascade_pairs.tasks or []),
            ("refiner.mix", list(self.refiner.mix)),
            ("cascade_eval.cascade.route_tasks", self.cascade_eval.cascade.route_tasks or []),
        ):
            for name in names:
                if name not in TASK_FAMILIES:
                    raise ValueError(f"{key}.{name}: unknown task family (known: {', '.join(TASK_FAMILIES)})")
        return self


def _format_error(error: ValidationError) -> str:
    first = error.errors()[0]
    path = ".".join(str(part) for part in first["loc"])
    message = first["msg"]
    kind = first["type"]
    if kind == "extra_forbidden":
        message = "unknown key"
    elif kind == "value_error":
        message = message.removeprefix("Value error, ")
        inner_path, sep, rest = message.partition(": ")
        if sep and " " not in inner_path:
            path = f"{path}.{inner_path}" if path else inner_path
            message = rest
    else:
        message = f"{message.replace('Input should be', 'must be')} (got {first.get('input')!r})"
    return f"{path}: {message}" if path else message


def parse_params(raw: dict[str, Any], source: str = "params.yaml") -> Params:
    """Validate a params mapping; raise ParamsError with one line naming the first bad key path."""
    try:
        return Params.model_validate(raw)
    except ValidationError as error:
        raise ParamsError(f"{source}: {_format_error(error)}") from None


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate params.yaml."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path}: file not found")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ParamsError(f"{path}: not valid YAML ({str(error).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: top level must be a mapping of sections")
    return parse_params(raw, source=str(path))
