"""Hybrid RNN-Transformer (issue 6): biLSTM + attention encoder, Transformer decoder, generation helpers."""

from cascadelab.models.hybrid_rnn.configuration_hybrid_rnn import HYBRID_RNN_PRESETS, HybridRNNConfig
from cascadelab.models.hybrid_rnn.modeling_hybrid_rnn import (
    HybridRNNModel,
    HybridRNNPreTrainedModel,
    HybridRNNTransformer,
    seq2seq_loss,
    shift_tokens_right,
)

__all__ = [
    "HYBRID_RNN_PRESETS",
    "HybridRNNConfig",
    "HybridRNNModel",
    "HybridRNNPreTrainedModel",
    "HybridRNNTransformer",
    "seq2seq_loss",
    "shift_tokens_right",
]
