"""Analytic forward FLOPs of LEGO per token (weight matmuls only: 2 FLOPs per multiply-add).

Attention scores (QK^T, AV) and norms are left out: at these sequence lengths (~20-50 tokens) they are
a few per cent of a layer. Per token and layer: q/k/v/o projections 4·d², the SwiGLU MLP 3·d·f; an exit
head d·V. A routed token that exits after ``exit_layer`` still pays, in every upper layer, the key/value
projections of its exit-layer state (2·d²), which later tokens attend to (CALM's state propagation).
"""

from __future__ import annotations

from cascadelab.models.lego.configuration_lego import LEGOConfig


def layer_flops(config: LEGOConfig) -> dict[str, float]:
    """Forward FLOPs per token of a whole layer, of its key/value projections alone, and of one exit head."""
    d, f = config.hidden_size, config.intermediate_size
    return {"layer": 2.0 * (4 * d * d + 3 * d * f), "kv": 2.0 * (2 * d * d), "head": 2.0 * d * config.vocab_size}


def full_depth_flops(config: LEGOConfig) -> float:
    """Forward FLOPs per token of the full-depth pass: every layer and the final exit head."""
    per = layer_flops(config)
    return config.depth * per["layer"] + per["head"]


def routed_flops(config: LEGOConfig, exit_layer: int, exit_share: float) -> float:
    """Mean forward FLOPs per token when ``exit_share`` of the tokens stop after ``exit_layer``.

    Every token: the layers up to ``exit_layer``, the exit head (its confidence decides) and the upper
    layers' key/value projections. A token that goes on: the rest of each upper layer and the final head.
    """
    if not 0.0 <= exit_share <= 1.0:
        raise ValueError(f"exit_share: must be in [0, 1], got {exit_share}")
    per = layer_flops(config)
    upper = config.depth - exit_layer
    every = exit_layer * per["layer"] + per["head"] + upper * per["kv"]
    deep = upper * (per["layer"] - per["kv"]) + per["head"]
    return every + (1.0 - exit_share) * deep


def routed_compute_cost(config: LEGOConfig, exit_layer: int, exit_share: float) -> float:
    """Routed FLOPs per token over the full-depth pass's (above 1 when nothing exits: the extra exit head)."""
    return routed_flops(config, exit_layer, exit_share) / full_depth_flops(config)


__all__ = ["full_depth_flops", "layer_flops", "routed_compute_cost", "routed_flops"]
