"""Configuration of the hybrid RNN-Transformer (biLSTM encoder, Transformer decoder) and its presets."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from cascadelab.models.configuration_decoder import LMConfig

# Named sizes. `seed` is the seed design's model: 3-layer biLSTM of 256 per direction, 4-head attention over
# its states, 6-layer decoder, 8 heads, d_model 512, FF 2048, separate output projection (32.3 M parameters
# with its 1,000-token vocabulary; the seed quotes ≈ 33 M). `small`, the config's field defaults, is the pipeline
# default: the size of the 1 M-parameter coarse decoder-only model, so the two compare, and it trains on 2 CPU
# cores in minutes. `tiny` is for unit tests.
HYBRID_RNN_PRESETS: dict[str, dict[str, Any]] = {
    "seed": {
        "vocab_size": 1000,
        "d_model": 512,
        "encoder_rnn_layers": 3,
        "encoder_rnn_hidden_size": 256,
        "encoder_attention_heads": 4,
        "decoder_layers": 6,
        "decoder_attention_heads": 8,
        "decoder_ffn_dim": 2048,
        "max_position_embeddings": 512,
        "dropout": 0.1,
        "tie_word_embeddings": False,
        "encoder_embedding_residual": False,
    },
    "small": {},  # the field defaults of HybridRNNConfig
    "tiny": {
        "d_model": 32,
        "encoder_rnn_layers": 1,
        "encoder_rnn_hidden_size": 16,
        "encoder_attention_heads": 2,
        "decoder_layers": 1,
        "decoder_attention_heads": 2,
        "decoder_ffn_dim": 64,
        "max_position_embeddings": 64,
        "dropout": 0.0,
    },
}


class HybridRNNConfig(LMConfig):
    """Sizes and token ids of `HybridRNNForConditionalGeneration`; field defaults are the `small` preset.

    `context` picks what the decoder cross-attends to: `"sequence"` (every encoder state, the default) or
    `"pooled"` (one attention-pooled vector per source, the seed's `(batch, 1, d_model)` context).
    `encoder_embedding_residual` adds each source token's embedding to its biLSTM state (off in the `seed`
    preset, which follows the seed design exactly).
    When `2 * encoder_rnn_hidden_size != d_model` a linear layer maps the biLSTM states to `d_model`.
    """

    model_type = "hybrid_rnn"
    attribute_map: ClassVar[dict[str, str]] = {
        "hidden_size": "d_model",
        "num_attention_heads": "decoder_attention_heads",
        "num_hidden_layers": "decoder_layers",
    }

    d_model: int = 128
    encoder_rnn_layers: int = 2
    encoder_rnn_hidden_size: int = 64
    encoder_attention_heads: int = 4
    decoder_layers: int = 3
    decoder_attention_heads: int = 4
    decoder_ffn_dim: int = 512
    max_position_embeddings: int = 128
    dropout: float = 0.0
    context: Literal["sequence", "pooled"] = "sequence"
    encoder_embedding_residual: bool = True
    layer_norm_eps: float = 1e-5
    decoder_start_token_id: int | None = 1
    is_encoder_decoder: bool = True

    def __post_init__(self, **kwargs: Any) -> None:
        super().__post_init__(**kwargs)
        self._validate_sizes()

    def _validate_sizes(self) -> None:
        """Raise ValueError naming the first field that cannot build a model."""
        positive = (
            "vocab_size",
            "d_model",
            "encoder_rnn_layers",
            "encoder_rnn_hidden_size",
            "encoder_attention_heads",
            "decoder_layers",
            "decoder_attention_heads",
            "decoder_ffn_dim",
            "max_position_embeddings",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"HybridRNNConfig.{name}: must be > 0, got {getattr(self, name)}")
        for name in ("encoder_attention_heads", "decoder_attention_heads"):
            if self.d_model % getattr(self, name) != 0:
                raise ValueError(
                    f"HybridRNNConfig.{name}: must divide d_model={self.d_model}, got {getattr(self, name)}"
                )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"HybridRNNConfig.dropout: must be in [0, 1), got {self.dropout}")
        if self.context not in ("sequence", "pooled"):
            raise ValueError(f"HybridRNNConfig.context: must be 'sequence' or 'pooled', got {self.context!r}")
        for name in ("pad_token_id", "bos_token_id", "eos_token_id", "decoder_start_token_id"):
            value = getattr(self, name)
            if value is not None and not 0 <= value < self.vocab_size:
                raise ValueError(f"HybridRNNConfig.{name}: must be in [0, vocab_size), got {value}")

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> HybridRNNConfig:
        """Build the named preset (`seed`, `small`, `tiny`), with keyword overrides (e.g. `vocab_size`)."""
        if name not in HYBRID_RNN_PRESETS:
            raise ValueError(f"unknown hybrid_rnn preset {name!r}; choose one of {sorted(HYBRID_RNN_PRESETS)}")
        return cls(**{**HYBRID_RNN_PRESETS[name], **overrides})
