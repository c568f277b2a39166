"""CPU inference optimisation the seed plans: dynamic int8 quantisation of the Linear and LSTM layers."""

from __future__ import annotations

import copy
import warnings

import torch
from torch import nn
from torch.ao.quantization import quantize_dynamic

from cascadelab.models.hybrid_rnn.modeling_hybrid_rnn import HybridRNNForConditionalGeneration


def quantize_dynamic_int8(model: HybridRNNForConditionalGeneration) -> HybridRNNForConditionalGeneration:
    """A copy of `model` whose Linear and LSTM weights are int8 (activations quantised on the fly), for CPU.

    The embedding, positions and LayerNorms stay fp32; the tied LM head gets its own int8 copy of the
    embedding. The result generates like the original but is inference-only: it cannot be trained or
    saved with `save_pretrained` (quantised modules hold packed weights, not parameters).
    """
    if model.device.type != "cpu":
        raise ValueError(f"dynamic int8 quantisation runs on CPU; the model is on {model.device}")
    quantized = copy.deepcopy(model).eval()
    with warnings.catch_warnings():
        # torch.ao eager quantisation is deprecated in favour of torchao (not a dependency); it still works.
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*")
        quantize_dynamic(quantized, {nn.Linear, nn.LSTM}, dtype=torch.qint8, inplace=True)
    return quantized
