"""SIGMA model configuration: a hybrid stack of Mamba-3 and MLA/differential-attention blocks with MoE."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

from transformers import PreTrainedConfig

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


class SigmaConfig(PreTrainedConfig):
    """Configuration of :class:`SigmaForCausalLM`; ``SigmaConfig.from_preset("tiny")`` gives the test size.

    The block pattern comes from ``attn_layer_idx`` when given, otherwise from ``mamba_ratio`` /
    ``attention_ratio``. ``layer_types`` is derived ("linear_attention" for Mamba blocks,
    "full_attention" for MLA blocks) so that ``DynamicCache(config=...)`` holds SSM states for the
    former and KV latents for the latter.
    """

    model_type = "sigma"
    keys_to_ignore_at_inference: ClassVar[list[str]] = ["past_key_values"]

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

    def __init__(
        self,
        vocab_size: int = 256,
        hidden_size: int = 128,
        num_hidden_layers: int = 4,
        mamba_ratio: int = 1,
        attention_ratio: int = 1,
        attn_layer_idx: Sequence[int] | None = None,
        ssm_state_size: int = 16,
        ssm_head_dim: int = 32,
        ssm_expand: int = 2,
        ssm_rope_fraction: float = 0.5,
        ssm_chunk_size: int = 64,
        ssm_dt_min: float = 1e-3,
        ssm_dt_max: float = 0.1,
        ssm_dt_init_floor: float = 1e-4,
        ssm_a_floor: float = 1e-4,
        num_attention_heads: int = 4,
        q_lora_rank: int = 0,
        kv_lora_rank: int = 64,
        qk_nope_head_dim: int = 16,
        qk_rope_head_dim: int = 16,
        v_head_dim: int = 32,
        rope_theta: float = 10000.0,
        use_diff_attn: bool = True,
        moe_num_routed_experts: int = 4,
        moe_num_shared_experts: int = 1,
        moe_top_k: int = 2,
        moe_intermediate_size: int = 64,
        moe_shared_intermediate_size: int = 256,
        moe_routed_scaling: float = 1.0,
        moe_bias_update_rate: float = 1e-3,
        moe_aux_loss_coef: float = 1e-3,
        moe_dispatch: str = "auto",
        bitlinear_families: Sequence[str] = (),
        use_triton: bool = True,
        rms_norm_eps: float = 1e-6,
        initializer_range: float = 0.02,
        max_position_embeddings: int = 2048,
        use_cache: bool = True,
        tie_word_embeddings: bool = True,
        pad_token_id: int | None = 0,
        bos_token_id: int | None = 1,
        eos_token_id: int | None = 2,
        **kwargs: Any,
    ) -> None:
        # derived fields saved with the config come back through kwargs: recompute them instead
        kwargs.pop("layer_types", None)
        kwargs.pop("number_of_conv_states", None)
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.mamba_ratio = mamba_ratio
        self.attention_ratio = attention_ratio
        if attn_layer_idx is None:
            attn_layer_idx = hybrid_attn_layer_idx(num_hidden_layers, mamba_ratio, attention_ratio)
        self.attn_layer_idx = sorted(int(i) for i in attn_layer_idx)
        self.ssm_state_size = ssm_state_size
        self.ssm_head_dim = ssm_head_dim
        self.ssm_expand = ssm_expand
        self.ssm_rope_fraction = ssm_rope_fraction
        self.ssm_chunk_size = ssm_chunk_size
        self.ssm_dt_min = ssm_dt_min
        self.ssm_dt_max = ssm_dt_max
        self.ssm_dt_init_floor = ssm_dt_init_floor
        self.ssm_a_floor = ssm_a_floor
        self.num_attention_heads = num_attention_heads
        self.q_lora_rank = q_lora_rank
        self.kv_lora_rank = kv_lora_rank
        self.qk_nope_head_dim = qk_nope_head_dim
        self.qk_rope_head_dim = qk_rope_head_dim
        self.v_head_dim = v_head_dim
        self.rope_theta = rope_theta
        self.use_diff_attn = use_diff_attn
        self.moe_num_routed_experts = moe_num_routed_experts
        self.moe_num_shared_experts = moe_num_shared_experts
        self.moe_top_k = moe_top_k
        self.moe_intermediate_size = moe_intermediate_size
        self.moe_shared_intermediate_size = moe_shared_intermediate_size
        self.moe_routed_scaling = moe_routed_scaling
        self.moe_bias_update_rate = moe_bias_update_rate
        self.moe_aux_loss_coef = moe_aux_loss_coef
        self.moe_dispatch = moe_dispatch
        self.bitlinear_families = list(bitlinear_families)
        self.use_triton = use_triton
        self.rms_norm_eps = rms_norm_eps
        self.initializer_range = initializer_range
        self.max_position_embeddings = max_position_embeddings
        self.use_cache = use_cache
        self._validate()
        self.layer_types = [
            "full_attention" if i in self.attn_layer_idx else "linear_attention" for i in range(num_hidden_layers)
        ]
        self.number_of_conv_states = 4  # Mamba cache slots: angles, SSM state, last key, last value
        special: dict[str, Any] = {
            "tie_word_embeddings": tie_word_embeddings,
            "pad_token_id": pad_token_id,
            "bos_token_id": bos_token_id,
            "eos_token_id": eos_token_id,
        }
        super().__init__(**special, **kwargs)

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
            all(0 <= i < self.num_hidden_layers for i in self.attn_layer_idx),
            f"attn_layer_idx must lie in [0, {self.num_hidden_layers}), got {self.attn_layer_idx}",
        )
        need(len(set(self.attn_layer_idx)) == len(self.attn_layer_idx), "attn_layer_idx has duplicates")
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
    def block_types(self) -> list[str]:
        """Per-layer block kind: "mamba" or "mla"."""
        return ["mla" if i in self.attn_layer_idx else "mamba" for i in range(self.num_hidden_layers)]

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
