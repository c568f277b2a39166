"""Config fields shared by the language models here, declared once; families set their defaults and add fields.

`LMConfig` holds what every model has (vocabulary, positions, init scale, cache, tied embeddings, special ids);
`DecoderConfig` adds the decoder-only transformer's width, depth, heads, RoPE base and RMSNorm epsilon (ACOC,
LEGO, SIGMA). Like every transformers v5 config they are dataclasses: a family redeclares a field only to
change its default, and derives or checks fields in `__post_init__`.
"""

from __future__ import annotations

from typing import ClassVar

from transformers import PreTrainedConfig


class LMConfig(PreTrainedConfig):
    """Vocabulary, positions, init scale, KV cache, tied embeddings and special token ids of a language model."""

    keys_to_ignore_at_inference: ClassVar[list[str]] = ["past_key_values"]

    vocab_size: int = 128
    max_position_embeddings: int = 512
    initializer_range: float = 0.02
    use_cache: bool = True
    tie_word_embeddings: bool = True
    pad_token_id: int | None = 0
    bos_token_id: int | None = 1
    eos_token_id: int | None = 2


class DecoderConfig(LMConfig):
    """An `LMConfig` plus the sizes of a decoder-only transformer with rotary positions and RMSNorm."""

    hidden_size: int = 128
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-6


__all__ = ["DecoderConfig", "LMConfig"]
