"""Hybrid RNN-Transformer (issue 6): biLSTM + attention encoder, Transformer decoder, generation helpers.

Importing this package registers `hybrid_rnn` with `AutoConfig` and `AutoModelForSeq2SeqLM`.
"""

from cascadelab.models.hybrid_rnn.configuration_hybrid_rnn import HYBRID_RNN_PRESETS, HybridRNNConfig
from cascadelab.models.hybrid_rnn.modeling_hybrid_rnn import (
    HybridRNNForConditionalGeneration,
    HybridRNNModel,
    HybridRNNPreTrainedModel,
    HybridRNNTransformer,
    init_hybrid_rnn,
    seq2seq_loss,
    shift_tokens_right,
)
from cascadelab.models.hybrid_rnn.quantization import quantize_dynamic_int8
from cascadelab.models.hybrid_rnn.response import ResponseGenerator

__all__ = [
    "HYBRID_RNN_PRESETS",
    "HybridRNNConfig",
    "HybridRNNForConditionalGeneration",
    "HybridRNNModel",
    "HybridRNNPreTrainedModel",
    "HybridRNNTransformer",
    "ResponseGenerator",
    "init_hybrid_rnn",
    "quantize_dynamic_int8",
    "seq2seq_loss",
    "shift_tokens_right",
]
