"""The `sigma_pretrain` section: SigmaLLM and its Llama baseline pre-trained on the same batches."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, model_validator

from cascadelab.config.base import EvalParams, ParamsError, StrictModel, check_mix, tokenizer_ids
from cascadelab.config.coarse_sft import CausalLMParams
from cascadelab.config.optimizers import OptimizerSettings

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from cascadelab.config.sigma_rl import SigmaRLParams
    from cascadelab.models.sigma import SigmaConfig

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

    def to_config(self, tokenizer: PreTrainedTokenizerBase) -> SigmaConfig:
        """The `SigmaConfig` of the preset with the set knobs and overrides, ids from `tokenizer`."""
        # Imported here: loading params.yaml must not import the model code (config is a leaf).
        import inspect

        from cascadelab.models.sigma import SigmaConfig

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
