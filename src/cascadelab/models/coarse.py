"""The coarse model of the cascade: a Llama- or Qwen2-family causal LM built from config, or a base model."""

from __future__ import annotations

from typing import Literal, Protocol

from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from cascadelab.data.tokenizer import COARSE, REFINE


class CausalLMSizes(Protocol):
    """The architecture fields `build_causal_lm` reads (the `CausalLMParams` section of params.yaml)."""

    family: Literal["llama", "qwen2"]
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    initializer_range: float
    max_position_embeddings: int


def build_causal_lm(params: CausalLMSizes, tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel:
    """A randomly initialised causal LM sized by `params`, with ids taken from `tokenizer`."""
    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=params.hidden_size,
        num_hidden_layers=params.num_layers,
        num_attention_heads=params.num_heads,
        num_key_value_heads=params.num_heads,
        intermediate_size=params.intermediate_size,
        initializer_range=params.initializer_range,
        max_position_embeddings=params.max_position_embeddings,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        use_cache=True,
    )
    if params.family == "llama":
        return LlamaForCausalLM(LlamaConfig(**common))
    return Qwen2ForCausalLM(Qwen2Config(**common))


def load_base_model(name_or_path: str) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A pretrained model and its tokenizer (local path or hub id), given the cascade's special tokens."""
    tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    added = tokenizer.add_special_tokens({"additional_special_tokens": [COARSE, REFINE]})
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(name_or_path)
    if added:
        model.resize_token_embeddings(len(tokenizer))
    model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer
