"""The `hybrid_rnn` section: the biLSTM-encoder / Transformer-decoder model and its training."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, model_validator

from cascadelab.config.base import (
    CurriculumParams,
    EvalParams,
    StrictModel,
    TrainParams,
    check_mix,
    default_mix,
    tokenizer_ids,
)

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from cascadelab.models.hybrid_rnn import HybridRNNConfig


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

    def to_config(self, tokenizer: PreTrainedTokenizerBase) -> HybridRNNConfig:
        """The `HybridRNNConfig` of the preset with the overrides, sized and given token ids by `tokenizer`."""
        # Imported here: loading params.yaml must not import the model code (config is a leaf).
        from cascadelab.models.hybrid_rnn import HybridRNNConfig

        ids = tokenizer_ids(tokenizer)
        missing = [name for name in ("pad_token_id", "bos_token_id", "eos_token_id") if ids[name] is None]
        if missing:
            raise ValueError(f"tokenizer has no {missing[0]}; the hybrid model needs pad, bos and eos tokens")
        return HybridRNNConfig.from_preset(
            self.preset, decoder_start_token_id=ids["bos_token_id"], **ids, **self.config_overrides()
        )


class HybridRNNTrainParams(TrainParams):
    """Teacher-forced training of the hybrid model: steps, WSD schedule, early stopping on val loss."""

    max_steps: int = Field(4000, gt=0)
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
