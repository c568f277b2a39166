"""Typed schema of params.yaml: one pydantic model per section, validated before any work.

Loading stops at the first problem with one line naming the key path, e.g.
``params.yaml: coarse_sft.train.learning_rate: must be > 0 (got -1.0)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from cascadelab.cascade.settings import CascadeEvalSettings, LimenSettings, PairsSettings, RefinerSettings
from cascadelab.training.optimizers.muon import MuonAdamWSettings

TASK_FAMILIES = ("add", "sub", "mul", "expr", "reverse", "word")


class ParamsError(ValueError):
    """A params.yaml problem, reported as one line naming the key path."""


class StrictModel(BaseModel):
    """Base for every params section: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


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


class PrepareParams(StrictModel):
    """Corpus generation and tokenizer training."""

    families: dict[str, FamilyParams] = Field(
        default_factory=lambda: {name: FamilyParams() for name in TASK_FAMILIES}, min_length=1
    )
    sizes: SplitSizes = Field(default_factory=lambda: SplitSizes())
    answer_format: Literal["reversed", "plain"] = "reversed"
    user_dataset: UserDatasetParams | None = None
    tokenizer: TokenizerParams = Field(default_factory=lambda: TokenizerParams())

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


class SFTTrainParams(StrictModel):
    """Optimisation settings of a supervised fine-tuning run (steps, not seconds, so reruns are identical)."""

    max_steps: int = Field(8000, gt=0)
    batch_size: int = Field(16, gt=0)
    learning_rate: float = Field(1e-3, gt=0)
    warmup_steps: int = Field(100, ge=0)
    decay_fraction: float = Field(0.2, ge=0, le=1)
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    logging_steps: int = Field(50, gt=0)
    save_steps: int = Field(1000, ge=0)
    bf16: bool = False
    activation_checkpointing: bool = False
    num_threads: int = Field(2, gt=0)


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


class SigmaOptimizerParams(StrictModel):
    """`adamw` over every parameter, or `muon`: Muon for hidden matrices + AdamW for the rest."""

    name: Literal["adamw", "muon"] = "adamw"
    learning_rate: float = Field(1e-3, gt=0)
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = Field(0.0, ge=0)
    muon: MuonAdamWSettings = Field(default_factory=lambda: MuonAdamWSettings())


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


class SigmaPretrainParams(StrictModel):
    """Pre-train SigmaLLM on the corpus and a same-size Llama baseline on the same batches; evaluate both."""

    model: SigmaModelParams = Field(default_factory=lambda: SigmaModelParams())
    instant: InstantParams = Field(default_factory=lambda: InstantParams())
    optimizer: SigmaOptimizerParams = Field(default_factory=lambda: SigmaOptimizerParams())
    train: SigmaTrainParams = Field(default_factory=lambda: SigmaTrainParams())
    mix: dict[str, float] = Field(
        default_factory=lambda: {"add": 0.1, "sub": 0.1, "mul": 0.15, "expr": 0.2, "reverse": 0.2, "word": 0.25}
    )
    baseline: CausalLMParams = Field(default_factory=lambda: CausalLMParams(intermediate_size=576))
    baseline_param_tolerance: float = Field(0.05, ge=0)
    eval: EvalParams = Field(default_factory=lambda: EvalParams())

    @model_validator(mode="after")
    def _check_mix(self) -> SigmaPretrainParams:
        check_mix(self.mix)
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


# --------------------------------------------------------------------------------------------- root
class Params(StrictModel):
    """The whole params.yaml: the global seed plus one section per stage."""

    seed: int = Field(1234, ge=0)
    tracking: TrackingParams = Field(default_factory=lambda: TrackingParams())
    prepare: PrepareParams = Field(default_factory=PrepareParams)
    coarse_sft: CoarseSFTParams = Field(default_factory=CoarseSFTParams)
    sigma_pretrain: SigmaPretrainParams = Field(default_factory=SigmaPretrainParams)
    lego: LegoParams = Field(default_factory=LegoParams)
    hybrid_rnn: HybridRNNParams = Field(default_factory=HybridRNNParams)
    cascade_pairs: PairsSettings = Field(default_factory=PairsSettings)
    limen: LimenSettings = Field(default_factory=LimenSettings)
    refiner: RefinerSettings = Field(default_factory=RefinerSettings)
    cascade_eval: CascadeEvalSettings = Field(default_factory=CascadeEvalSettings)

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
