"""SIGMA model configuration: a hybrid stack of Mamba-3 and MLA/differential-attention blocks with MoE."""

from __future__ import annotations

import math
from dataclasses import field
from typing import Any, ClassVar

from cascadelab.models.configuration_decoder import DecoderConfig

BITLINEAR_FAMILIES: tuple[str, ...] = (
    "mamba_in",
    "mamba_out",
    "mla_q",
    "mla_kv",
    "mla_out",
    "moe_routed",
    "moe_shared",
)
"""Projection families that ``bitlinear_families`` may switch to BitLinear."""


def hybrid_attn_layer_idx(num_layers: int, mamba_ratio: int, attention_ratio: int) -> list[int]:
    """Indices of the MLA layers when ``mamba_ratio`` Mamba blocks come per ``attention_ratio`` MLA blocks.

    Attention layers are spread evenly and close each group, e.g. 4 layers at 3:1 -> [3]; 4 at 1:1 -> [1, 3].
    """
    if mamba_ratio < 0 or attention_ratio < 0 or mamba_ratio + attention_ratio == 0:
        raise ValueError(f"mamba_ratio and attention_ratio must be >= 0, not both 0: {mamba_ratio}, {attention_ratio}")
    period = mamba_ratio + attention_ratio
    return [i for i in range(num_layers) if (i + 1) * attention_ratio // period > i * attention_ratio // period]


class SigmaConfig(DecoderConfig):
    """Configuration of :class:`SigmaForCausalLM`; ``SigmaConfig.from_preset("tiny")`` gives the test size.

    The block pattern comes from ``attn_layer_idx`` when given, otherwise from ``mamba_ratio`` /
    ``attention_ratio``. ``layer_types`` is derived ("linear_attention" for Mamba blocks,
    "full_attention" for MLA blocks) so that ``DynamicCache(config=...)`` holds SSM states for the
    former and KV latents for the latter.
    """

    model_type = "sigma"

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        # unit-test size: every feature but BitLinear on, ~34 k parameters
        "tiny": {
            "vocab_size": 64,
            "hidden_size": 32,
            "num_hidden_layers": 2,
            "ssm_state_size": 16,
            "ssm_head_dim": 16,
            "ssm_chunk_size": 16,
            "num_attention_heads": 2,
            "kv_lora_rank": 16,
            "qk_nope_head_dim": 8,
            "qk_rope_head_dim": 8,
            "v_head_dim": 16,
            "moe_num_routed_experts": 4,
            "moe_top_k": 2,
            "moe_intermediate_size": 16,
            "moe_shared_intermediate_size": 32,
        },
        # the default: ~1.1 M parameters, trains on 2 CPU cores (compare a 1 M-param Llama, FFN 512)
        "small": {},
    }

    vocab_size: int = 256
    num_hidden_layers: int = 4
    max_position_embeddings: int = 2048
    mamba_ratio: int = 1
    attention_ratio: int = 1
    attn_layer_idx: list[int] | None = None
    ssm_state_size: int = 16
    ssm_head_dim: int = 32
    ssm_expand: int = 2
    ssm_rope_fraction: float = 0.5
    ssm_chunk_size: int = 64
    ssm_dt_min: float = 1e-3
    ssm_dt_max: float = 0.1
    ssm_dt_init_floor: float = 1e-4
    ssm_a_floor: float = 1e-4
    q_lora_rank: int = 0
    kv_lora_rank: int = 64
    qk_nope_head_dim: int = 16
    qk_rope_head_dim: int = 16
    v_head_dim: int = 32
    use_diff_attn: bool = True
    moe_num_routed_experts: int = 4
    moe_num_shared_experts: int = 1
    moe_top_k: int = 2
    moe_intermediate_size: int = 64
    moe_shared_intermediate_size: int = 256
    moe_routed_scaling: float = 1.0
    moe_bias_update_rate: float = 1e-3
    moe_aux_loss_coef: float = 1e-3
    moe_dispatch: str = "auto"
    bitlinear_families: list[str] = field(default_factory=list)
    use_triton: bool = True

    def __post_init__(self, **kwargs: Any) -> None:
        # derived fields saved with the config come back through kwargs: recompute them instead
        kwargs.pop("layer_types", None)
        kwargs.pop("number_of_conv_states", None)
        attn = self.attn_layer_idx
        if attn is None:
            attn = hybrid_attn_layer_idx(self.num_hidden_layers, self.mamba_ratio, self.attention_ratio)
        self.attn_layer_idx = sorted(int(i) for i in attn)
        self.bitlinear_families = list(self.bitlinear_families)
        self._validate()
        self.layer_types = ["full_attention" if kind == "mla" else "linear_attention" for kind in self.block_types]
        self.number_of_conv_states = 4  # Mamba cache slots: angles, SSM state, last key, last value
        super().__post_init__(**kwargs)

    def _validate(self) -> None:
        def need(ok: bool, message: str) -> None:
            if not ok:
                raise ValueError(message)

        for name in (
            "vocab_size",
            "hidden_size",
            "num_hidden_layers",
            "ssm_state_size",
            "ssm_head_dim",
            "ssm_expand",
            "ssm_chunk_size",
            "num_attention_heads",
            "kv_lora_rank",
            "qk_rope_head_dim",
            "v_head_dim",
            "moe_top_k",
        ):
            need(getattr(self, name) > 0, f"{name} must be > 0, got {getattr(self, name)}")
        need(
            all(0 <= i < self.num_hidden_layers for i in self.attention_layers),
            f"attn_layer_idx must lie in [0, {self.num_hidden_layers}), got {self.attn_layer_idx}",
        )
        need(len(set(self.attention_layers)) == len(self.attention_layers), "attn_layer_idx has duplicates")
        d_inner = self.ssm_expand * self.hidden_size
        need(
            d_inner % self.ssm_head_dim == 0,
            f"ssm_expand * hidden_size ({d_inner}) must be divisible by ssm_head_dim ({self.ssm_head_dim})",
        )
        need(self.ssm_state_size % 2 == 0, f"ssm_state_size must be even, got {self.ssm_state_size}")
        need(
            0.0 < self.ssm_rope_fraction <= 1.0,
            f"ssm_rope_fraction must be in (0, 1], got {self.ssm_rope_fraction}",
        )
        need(self.ssm_num_angles >= 1, "ssm_rope_fraction * ssm_state_size must cover at least one pair")
        need(0.0 < self.ssm_dt_min <= self.ssm_dt_max, "need 0 < ssm_dt_min <= ssm_dt_max")
        need(self.qk_rope_head_dim % 2 == 0, f"qk_rope_head_dim must be even, got {self.qk_rope_head_dim}")
        need(
            self.qk_nope_head_dim >= 0 and self.q_lora_rank >= 0,
            "qk_nope_head_dim and q_lora_rank must be >= 0",
        )
        need(
            self.moe_num_routed_experts >= 0 and self.moe_num_shared_experts >= 0,
            "expert counts must be >= 0",
        )
        need(self.moe_num_routed_experts + self.moe_num_shared_experts > 0, "need at least one expert")
        if self.moe_num_routed_experts:
            need(
                self.moe_top_k <= self.moe_num_routed_experts,
                f"moe_top_k ({self.moe_top_k}) exceeds moe_num_routed_experts ({self.moe_num_routed_experts})",
            )
        need(
            self.moe_bias_update_rate >= 0 and self.moe_aux_loss_coef >= 0,
            "moe_bias_update_rate and moe_aux_loss_coef must be >= 0",
        )
        need(
            self.moe_dispatch in ("auto", "sparse", "dense"),
            f"moe_dispatch must be 'auto', 'sparse' or 'dense', got {self.moe_dispatch!r}",
        )
        unknown = sorted(set(self.bitlinear_families) - set(BITLINEAR_FAMILIES))
        need(
            not unknown,
            f"bitlinear_families has unknown entries {unknown}; known: {', '.join(BITLINEAR_FAMILIES)}",
        )

    @property
    def ssm_num_angles(self) -> int:
        """Number of rotated state pairs (Mamba-3 rope fraction of the state dimension)."""
        return math.floor(self.ssm_state_size * self.ssm_rope_fraction) // 2

    @property
    def attention_layers(self) -> list[int]:
        """Indices of the MLA layers: ``attn_layer_idx``, which ``__post_init__`` resolves and sorts."""
        assert self.attn_layer_idx is not None
        return self.attn_layer_idx

    @property
    def block_types(self) -> list[str]:
        """Per-layer block kind: "mamba" or "mla"."""
        return ["mla" if i in self.attention_layers else "mamba" for i in range(self.num_hidden_layers)]

    def enabled_features(self) -> dict[str, bool]:
        """Which SIGMA features this configuration turns on (the kernels also need CUDA at run time)."""
        kinds = set(self.block_types)
        return {
            "mamba": "mamba" in kinds,
            "mla": "mla" in kinds,
            "diff_attn": "mla" in kinds and self.use_diff_attn,
            "moe": self.moe_num_routed_experts > 0,
            "bitlinear": bool(self.bitlinear_families),
            "instant": True,
            "triton": self.use_triton,
        }

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> SigmaConfig:
        """Build a named preset ("tiny", "small"), with keyword overrides."""
        if name not in cls.PRESETS:
            raise ValueError(f"unknown SigmaConfig preset {name!r}; known: {', '.join(cls.PRESETS)}")
        return cls(**{**cls.PRESETS[name], **overrides})


__all__ = ["BITLINEAR_FAMILIES", "SigmaConfig", "hybrid_attn_layer_idx"]
