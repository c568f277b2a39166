"""The `coarse_sft` section: the cascade's coarse causal LM, built from config or a base model, and its SFT."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field, model_validator

from cascadelab.config.base import (
    MIX_DESCRIPTION,
    CurriculumParams,
    EvalParams,
    SFTTrainParams,
    StrictModel,
    check_mix,
    default_mix,
    section_field,
    tokenizer_ids,
)
from cascadelab.config.fields import LoraAlpha, LoraDropout, LoraRank
from cascadelab.config.transformer import InitializerRange, check_heads_divide, hf_sizes

if TYPE_CHECKING:
    from transformers import LlamaConfig, PreTrainedTokenizerBase, Qwen2Config


class CausalLMParams(StrictModel):
    """Architecture of a decoder-only LM built from config (Llama or Qwen2 family)."""

    family: Literal["llama", "qwen2"] = Field("llama", description="llama: LlamaForCausalLM | qwen2: Qwen2ForCausalLM")
    hidden_size: int = Field(128, gt=0, description="model width (embedding and residual stream size)")
    num_layers: int = Field(4, gt=0, description="decoder layers")
    num_heads: int = Field(
        4, gt=0, description="attention heads (also the KV heads: no grouped-query sharing); must divide hidden_size"
    )
    intermediate_size: int = Field(512, gt=0, description="hidden size of each layer's SwiGLU MLP")
    initializer_range: InitializerRange = 0.06
    max_position_embeddings: int = Field(256, gt=0, description="longest sequence in tokens (rotary position range)")

    @model_validator(mode="after")
    def _heads_divide(self) -> CausalLMParams:
        check_heads_divide(self)
        return self

    def to_config(self, tokenizer: PreTrainedTokenizerBase) -> LlamaConfig | Qwen2Config:
        """The HF config of this architecture (tied embeddings, full-size KV heads), ids from `tokenizer`."""
        # Imported here: loading params.yaml must not import transformers (config is a leaf).
        from transformers import LlamaConfig, Qwen2Config

        config_class = LlamaConfig if self.family == "llama" else Qwen2Config
        return config_class(
            **hf_sizes(self, self.num_layers),
            num_key_value_heads=self.num_heads,
            intermediate_size=self.intermediate_size,
            tie_word_embeddings=True,
            use_cache=True,
            **tokenizer_ids(tokenizer),
        )


class LoraParams(StrictModel):
    """Optional LoRA adapters through PEFT (for large base models)."""

    enabled: bool = Field(False, description="train LoRA adapters on base_model instead of every weight")
    r: LoraRank = 16
    alpha: LoraAlpha = 32
    dropout: LoraDropout = 0.05
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"],
        description="module names that receive adapters",
    )


class CoarseSFTParams(StrictModel):
    """The coarse model of the cascade: built from config (or a base model) and fine-tuned with TRL."""

    base_model: str | None = Field(
        None, description="local path or hub id of a pretrained model to fine-tune; null builds `model` from config"
    )
    model: CausalLMParams = section_field(CausalLMParams)
    train: SFTTrainParams = section_field(
        SFTTrainParams, "optimisation of the supervised fine-tuning run (in steps, so reruns are identical)"
    )
    curriculum: CurriculumParams = section_field(CurriculumParams)
    mix: dict[str, float] = Field(default_factory=default_mix, description=MIX_DESCRIPTION)
    lora: LoraParams = section_field(LoraParams)
    eval: EvalParams = section_field(EvalParams)

    @model_validator(mode="after")
    def _check_mix(self) -> CoarseSFTParams:
        check_mix(self.mix)
        if self.lora.enabled and self.base_model is None:
            raise ValueError("lora.enabled: LoRA needs coarse_sft.base_model (a pretrained model to adapt)")
        return self
