"""The `hybrid_rnn` section: the biLSTM-encoder / Transformer-decoder model and its training."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, model_validator

from cascadelab.config.base import (
    MIX_DESCRIPTION,
    CurriculumParams,
    EvalParams,
    StrictModel,
    TrainParams,
    check_mix,
    default_mix,
    registered_config,
    section_field,
    tokenizer_ids,
)
from cascadelab.config.fields import preset_field
from cascadelab.config.transformer import InitializerRange

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedTokenizerBase


class HybridRNNModelParams(StrictModel):
    """a named size of the hybrid RNN-Transformer, any of its sizes overridden (null keeps the preset's)."""

    preset: Literal["small", "seed", "tiny"] = Field(
        "small", description="small (1.08 M parameters) | seed (the seed design, ~33 M) | tiny (tests)"
    )
    context: Literal["sequence", "pooled"] = Field(
        "sequence",
        description="sequence: cross-attend to every encoder state | pooled: to one pooled vector (the seed's)",
    )
    initializer_range: InitializerRange = 0.06
    encoder_embedding_residual: bool | None = preset_field("add the token embeddings to the encoder's output states")
    d_model: int | None = preset_field("model width of embeddings and decoder", gt=0)
    encoder_rnn_layers: int | None = preset_field("stacked biLSTM layers of the encoder", gt=0)
    encoder_rnn_hidden_size: int | None = preset_field("hidden size of each LSTM direction", gt=0)
    encoder_attention_heads: int | None = preset_field("heads of the encoder's self-attention", gt=0)
    decoder_layers: int | None = preset_field("Transformer decoder layers", gt=0)
    decoder_attention_heads: int | None = preset_field("heads of the decoder's attention", gt=0)
    decoder_ffn_dim: int | None = preset_field("hidden size of the decoder's feed-forward layers", gt=0)
    max_position_embeddings: int | None = preset_field("longest sequence in tokens", gt=0)
    dropout: float | None = preset_field("dropout probability in training", ge=0, lt=1)

    def config_overrides(self) -> dict[str, Any]:
        """The `HybridRNNConfig` fields set here (all but the preset name and the unset sizes)."""
        return {key: value for key, value in self.model_dump(exclude={"preset"}).items() if value is not None}

    def to_config(self, tokenizer: PreTrainedTokenizerBase) -> PretrainedConfig:
        """The `HybridRNNConfig` of the preset with the overrides, sized and given token ids by `tokenizer`."""
        HybridRNNConfig = registered_config("hybrid_rnn")

        ids = tokenizer_ids(tokenizer)
        missing = [name for name in ("pad_token_id", "bos_token_id", "eos_token_id") if ids[name] is None]
        if missing:
            raise ValueError(f"tokenizer has no {missing[0]}; the hybrid model needs pad, bos and eos tokens")
        return HybridRNNConfig.from_preset(
            self.preset, decoder_start_token_id=ids["bos_token_id"], **ids, **self.config_overrides()
        )


class HybridRNNTrainParams(TrainParams):
    """Teacher-forced training of the hybrid model: steps, WSD schedule, early stopping on val loss."""

    max_steps: int = Field(4000, gt=0, description="optimizer steps at most (the schedule is laid over exactly these)")
    eval_steps: int = Field(500, gt=0, description="steps between two val-loss evaluations for early stopping")
    patience: int = Field(
        4, ge=1, description="evaluations of the mix phase without improvement before stopping (the best state is kept)"
    )
    min_delta: float = Field(0.0, ge=0, description="a val-loss decrease smaller than this is no improvement")
    eval_batch_size: int = Field(256, gt=0, description="sequences per val-loss batch")
    num_threads: int = Field(1, gt=0, description="torch CPU threads of the training")

    @property
    def checkpoint_steps(self) -> int:
        """Steps between resumable checkpoints, as the LM trainer reads them: never (a run takes minutes)."""
        return 0


class SamplingParams(StrictModel):
    """Sampled decoding: temperature, top-k (0 = off) and nucleus top-p (1.0 = off)."""

    temperature: float = Field(0.7, gt=0, description="sampling temperature")
    top_k: int = Field(0, ge=0, description="sample among the k most likely tokens (0: off)")
    top_p: float = Field(0.9, gt=0, le=1, description="nucleus sampling probability mass (1.0: off)")


class Seq2SeqEvalParams(EvalParams):
    """Evaluation on the test split with greedy, sampled and beam-search decoding."""

    num_beams: int = Field(4, ge=2, description="beams of the beam-search decoding")
    sampling: SamplingParams = section_field(SamplingParams, "the sampled decoding")


class HybridRNNParams(StrictModel):
    """The hybrid RNN-Transformer (issue 6): biLSTM encoder, Transformer decoder, trained on prompt→response."""

    model: HybridRNNModelParams = section_field(HybridRNNModelParams)
    train: HybridRNNTrainParams = section_field(HybridRNNTrainParams)
    curriculum: CurriculumParams = section_field(CurriculumParams)
    mix: dict[str, float] = Field(default_factory=default_mix, description=MIX_DESCRIPTION)
    eval: Seq2SeqEvalParams = section_field(Seq2SeqEvalParams)

    @model_validator(mode="after")
    def _check_mix(self) -> HybridRNNParams:
        check_mix(self.mix)
        return self
