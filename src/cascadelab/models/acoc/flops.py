"""Analytic training FLOPs of an ACOC model: 6 × multiply-accumulates of the forward pass (forward 2, backward 4).

Per token: the attention projections (q, k, v, o: 4·H² per layer), every expert's up and down projections
(2·H·W, dense mixing runs them all), the router (H per expert) and the tied LM head (H·V); per sequence
and layer the attention scores and the weighted sum of values (2·T²·H, counted over the whole padded
length). Norms, activations and the softmax are left out. Padded positions are computed, so they count.
"""

from __future__ import annotations

from transformers import PretrainedConfig


def matmul_params(config: PretrainedConfig) -> int:
    """Weights multiplied once per token in a forward pass (attention, experts, router, LM head)."""
    hidden = int(config.hidden_size)
    total = int(config.vocab_size) * hidden
    for layer in config.expert_widths:
        total += 4 * hidden * hidden
        total += sum(2 * hidden * sum(widths) + hidden for widths in layer)
    return total


def train_flops(config: PretrainedConfig, batch_size: int, seq_len: int) -> int:
    """Training FLOPs of one step on a `batch_size` × `seq_len` batch (padding included)."""
    tokens = batch_size * seq_len
    attention = 2 * seq_len * seq_len * int(config.hidden_size) * len(config.expert_widths) * batch_size
    return 6 * (matmul_params(config) * tokens + attention)
