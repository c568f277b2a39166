"""The coarse model of the cascade: a Llama- or Qwen2-family causal LM built from config, or a base model."""

from __future__ import annotations

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


def build_causal_lm(config: LlamaConfig | Qwen2Config) -> PreTrainedModel:
    """A randomly initialised causal LM of `config`'s family (`CausalLMParams.to_config` builds the config)."""
    if isinstance(config, LlamaConfig):
        return LlamaForCausalLM(config)
    return Qwen2ForCausalLM(config)


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
