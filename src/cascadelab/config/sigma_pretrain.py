"""The `sigma_pretrain` section: SigmaLLM and its Llama baseline pre-trained on the same batches."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field, model_validator

from cascadelab.config.base import (
    EvalParams,
    ParamsError,
    StrictModel,
    check_mix,
    registered_config,
    section_field,
    tokenizer_ids,
)
from cascadelab.config.coarse_sft import CausalLMParams
from cascadelab.config.fields import (
    DecayFraction,
    GroupBatchesByTask,
    MaxGradNorm,
    TrainBatchSize,
    preset_field,
)
from cascadelab.config.optimizers import OptimizerSettings

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedTokenizerBase


# Kept equal to cascadelab.models.sigma.BITLINEAR_FAMILIES (a unit test checks), so that params load
# without importing the model code.
SigmaBitLinearFamily = Literal["mamba_in", "mamba_out", "mla_q", "mla_kv", "mla_out", "moe_routed", "moe_shared"]


class SigmaModelParams(StrictModel):
    """SigmaLLM architecture: a `SigmaConfig` preset, the usual knobs, any other `SigmaConfig` argument.

    A knob left at null keeps the preset's value; vocabulary size and special-token ids always come
    from the corpus tokenizer.
    """

    preset: Literal["tiny", "small"] = Field(
        "small",
        description="SigmaConfig preset the knobs start from: tiny (tests) | small (~1.1 M parameters, char tokenizer)",
    )
    hidden_size: int | None = preset_field("model width", gt=0)
    num_layers: int | None = preset_field("decoder blocks, SigmaConfig's num_hidden_layers", gt=0)
    mamba_ratio: int = Field(1, ge=0, description="Mamba-3 blocks per attention_ratio MLA blocks in the layer pattern")
    attention_ratio: int = Field(
        1, ge=0, description="MLA attention blocks per mamba_ratio Mamba-3 blocks in the layer pattern"
    )
    use_diff_attn: bool = Field(True, description="differential attention in the MLA blocks")
    moe_num_routed_experts: int | None = preset_field(
        "routed experts per MoE layer; 0: a dense SwiGLU (the shared expert) instead", ge=0
    )
    moe_num_shared_experts: int | None = preset_field("always-on shared experts per MoE layer", ge=0)
    moe_top_k: int | None = preset_field("routed experts per token", gt=0)
    moe_intermediate_size: int | None = preset_field("hidden size of a routed expert", gt=0)
    moe_shared_intermediate_size: int | None = preset_field("hidden size of a shared expert", gt=0)
    bitlinear_families: list[SigmaBitLinearFamily] = Field(
        default_factory=list,
        description="ternary BitLinear families: mamba_in mamba_out mla_q mla_kv mla_out moe_routed moe_shared",
    )
    use_triton: bool = Field(True, description="Triton kernels on CUDA; the PyTorch reference elsewhere")
    initializer_range: float | None = preset_field("standard deviation of the normal weight initialisation", gt=0)
    overrides: dict[str, Any] = Field(
        default_factory=dict,
        description="any other SigmaConfig argument, e.g. {ssm_state_size: 32} (not vocab_size or the special ids)",
    )

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

    def to_config(self, tokenizer: PreTrainedTokenizerBase) -> PretrainedConfig:
        """The `SigmaConfig` of the preset with the set knobs and overrides, ids from `tokenizer`."""
        import inspect

        SigmaConfig = registered_config("sigma")

        kwargs = self.config_kwargs()
        accepted = inspect.signature(SigmaConfig.__init__).parameters
        for key in self.overrides:
            if key not in accepted:
                raise ValueError(f"sigma_pretrain.model.overrides.{key}: not a SigmaConfig argument")
        try:
            return SigmaConfig.from_preset(self.preset, **tokenizer_ids(tokenizer), **kwargs)
        except ValueError as error:
            raise ValueError(f"sigma_pretrain.model: {error}") from None


class InstantParams(StrictModel):
    """The INSTANT memory plan applied before the first training forward (chunked CE always on)."""

    chunk_size: int = Field(
        1024, gt=0, description="tokens per chunk of the chunked cross-entropy (the full logits are never materialised)"
    )
    checkpoint_blocks: bool = Field(False, description="per-block activation checkpointing (+~50 % step time on CPU)")


# The optimizer block (name + per-optimizer settings) lives beside the optimizers it configures.
SigmaOptimizerParams = OptimizerSettings


# The RL loop restates it with its own default.
SigmaWarmupSteps = Annotated[
    int, Field(ge=0, description="steps of linear learning-rate warm-up from 0 (must be < max_steps)")
]


class SigmaTrainParams(StrictModel):
    """The pre-training loop, shared by SigmaLLM and the baseline (same batches, same token budget)."""

    max_steps: int = Field(
        2400, gt=0, description="optimizer steps of each model (the schedule is laid over exactly these)"
    )
    batch_size: TrainBatchSize = 16
    warmup_steps: SigmaWarmupSteps = 100
    decay_fraction: DecayFraction = 0.2
    max_grad_norm: MaxGradNorm = 1.0
    logging_steps: int = Field(50, gt=0, description="steps between two metrics.jsonl lines and MLflow logs")
    eval_steps: int = Field(
        0, ge=0, description="steps between two val-loss evaluations, plus one at the end (0: never)"
    )
    eval_records: int = Field(256, gt=0, description="first N val records in each val-loss evaluation")
    num_threads: int = Field(1, gt=0, description="torch CPU threads per training process")
    parallel_baseline: bool = Field(
        True, description="the baseline trains in a second process at the same time (one core each)"
    )
    group_batches_by_task: GroupBatchesByTask = True
    checkpoint_steps: int = Field(
        0,
        ge=0,
        description="steps between resumable checkpoints in .cache/checkpoints/ (0: none); a multiple of logging_steps",
    )
    keep_checkpoints: int = Field(2, gt=0, description="newest resumable checkpoints kept on disk")


class SigmaFeatureParams(StrictModel):
    """Trainer features, each counted in metrics.jsonl (`feature_<name>_enabled` / `_effective_calls`)."""

    c3o_credit: bool = Field(
        False,
        description="C3O's per-group credit from each group's share of the loss decrease (needs optimizer.name: c3o)",
    )
    integrity_guards: bool = Field(
        False,
        description="skip non-finite steps, restore the last good state after some in a row, roll back loss spikes",
    )
    prefetch: bool = Field(False, description="batches built by a background thread into a bounded queue")
    crash_report: bool = Field(False, description="an unhandled exception writes <out>/errors/<UTC>.json")


class SigmaGuardParams(StrictModel):
    """Integrity-guard thresholds (used when `features.integrity_guards` is on)."""

    nonfinite_restore_after: int = Field(
        3, gt=0, description="this many non-finite steps in a row restore the last good state"
    )
    spike_factor: float = Field(
        5.0, gt=1, description="a loss above this factor x the running median is a spike (rolled back)"
    )
    spike_window: int = Field(50, gt=1, description="steps in the running median of the loss")
    spike_lr_factor: float = Field(0.5, gt=0, lt=1, description="a rollback multiplies the learning rate by this")
    snapshot_steps: int = Field(50, gt=0, description="steps between two snapshots of the last good state")


class SigmaStreamParams(StrictModel):
    """A streamed Hugging Face dataset's text field, mixed into the corpus batches (`data.source: hybrid`)."""

    path: str = Field(description="hub id, local dataset folder, or a builder name such as `json` (with data_files)")
    name: str | None = Field(None, description="dataset configuration name (null: the default)")
    split: str = Field("train", description="dataset split streamed")
    data_files: str | list[str] | None = Field(None, description="files for a builder such as `json` (null: none)")
    text_field: str = Field("text", description="record field holding the text")
    weight: float = Field(0.2, ge=0, le=1, description="share of batches drawn from the stream")
    max_length: int = Field(128, gt=1, description="tokens per streamed text, EOS included")
    shuffle_buffer: int = Field(1000, ge=0, description="records in the seeded shuffle buffer (0: stream order)")


class SigmaDataParams(StrictModel):
    """The training-batch pipeline: its source, and the prefetch used when `features.prefetch` is on."""

    prefetch_batches: int = Field(8, gt=0, description="bound of the prefetch queue in batches (features.prefetch)")
    source: Literal["local", "hybrid"] = Field(
        "local", description="local: the corpus | hybrid: the corpus mixed with `stream` (a streamed HF dataset)"
    )
    bootstrap_batches: int = Field(
        50, ge=0, description="hybrid: the first batches always come from the corpus (a deterministic start)"
    )
    stream: SigmaStreamParams | None = Field(
        None, description="hybrid: the streamed dataset (required then; null otherwise)"
    )

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


class SigmaLoopParams(StrictModel):
    """What SIGMA's pre-training and RL sections share: memory plan, optimizer, features, guards, batches, loop."""

    instant: InstantParams = section_field(InstantParams)
    optimizer: SigmaOptimizerParams = section_field(SigmaOptimizerParams)
    features: SigmaFeatureParams = section_field(SigmaFeatureParams)
    guards: SigmaGuardParams = section_field(SigmaGuardParams)
    data: SigmaDataParams = section_field(SigmaDataParams)
    train: SigmaTrainParams = section_field(SigmaTrainParams)


class SigmaPretrainParams(SigmaLoopParams):
    """Pre-train SigmaLLM on the corpus and a same-size Llama baseline on the same batches; evaluate both.

    `profile` expands into explicit settings before validation (:data:`SIGMA_PROFILES`; keys set in
    params.yaml win), so the validated section is exactly what runs and what is logged.
    """

    profile: SigmaProfile = Field(
        "standard",
        description="minimal | standard | full: expands into optimizer.name and features.*; keys set here win",
    )
    model: SigmaModelParams = section_field(SigmaModelParams)
    mix: dict[str, float] = Field(
        default_factory=lambda: {"add": 0.1, "sub": 0.1, "mul": 0.15, "expr": 0.2, "reverse": 0.2, "word": 0.25},
        description="sampling weight of each task family in the training batches",
    )
    baseline: CausalLMParams = Field(
        default_factory=lambda: CausalLMParams(intermediate_size=576),
        description="the Llama baseline, sized to SigmaLLM's parameter count",
    )
    baseline_param_tolerance: float = Field(
        0.05, ge=0, description="the stage fails if the two parameter counts differ by more than this relative share"
    )
    eval: EvalParams = section_field(EvalParams)

    @model_validator(mode="before")
    @classmethod
    def _expand_profile(cls, data: Any) -> Any:
        return expand_profile(data) if isinstance(data, dict) else data

    @model_validator(mode="after")
    def _check(self) -> SigmaPretrainParams:
        check_mix(self.mix)
        check_sigma_compatibility(self)
        return self


def check_sigma_compatibility(section: SigmaLoopParams) -> None:
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
