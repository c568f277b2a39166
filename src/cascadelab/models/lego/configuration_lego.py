"""Configuration of LEGO, the layered decoder-only LM with an exit head after each block."""

from __future__ import annotations

import itertools
from typing import Any

from cascadelab.models.configuration_decoder import DecoderConfig


class LEGOConfig(DecoderConfig):
    """Configuration of a LEGO model: its architecture and routing (training settings live in the `lego` section).

    Architecture: ``num_hidden_layers`` layers, exit heads after each layer in ``exit_layers``
    (strictly increasing, the last one equal to ``num_hidden_layers``). Layers up to
    ``exit_layers[0]`` are causal self-attention layers; later layers attend over their states (keys/values).
    Routing: ``exit_layer`` is the layer whose exit head decides, ``routing_threshold`` the
    confidence at or above which a token stops there.
    """

    model_type = "lego"

    intermediate_size: int = 512
    exit_layers: list[int] | None = None
    initializer_range: float = 0.06
    routing_threshold: float | None = None
    exit_layer: int | None = None

    def __post_init__(self, **kwargs: Any) -> None:
        if self.exit_layers is None:
            self.exit_layers = [self.num_hidden_layers]
        self.exit_layers = [int(x) for x in self.exit_layers]
        if self.exit_layer is None:
            self.exit_layer = self.exit_layers[0]
        super().__post_init__(**kwargs)
        self._check()

    def _check(self) -> None:
        """Raise ValueError naming the first inconsistent field."""
        depth, exits = self.depth, self.exit_points
        if depth < 1:
            raise ValueError(f"num_hidden_layers: must be >= 1, got {depth}")
        if any(b <= a for a, b in itertools.pairwise(exits)) or exits[0] < 1 or exits[-1] != depth:
            raise ValueError(f"exit_layers: must be strictly increasing in 1..{depth} and end at {depth}, got {exits}")
        if self.exit_layer not in exits:
            raise ValueError(f"exit_layer: must be one of exit_layers {exits}, got {self.exit_layer}")
        heads = self.num_attention_heads
        if self.hidden_size % heads != 0 or (self.hidden_size // heads) % 2:
            raise ValueError(
                f"hidden_size: must split into num_attention_heads={self.num_attention_heads} heads of even "
                f"size, got {self.hidden_size}"
            )

    def derive(self, **overrides: Any) -> LEGOConfig:
        """A new config equal to this one except for ``overrides`` (validated again)."""
        kwargs = self.to_dict()
        for key in ("architectures", "transformers_version", "model_type"):
            kwargs.pop(key, None)
        return LEGOConfig(**{**kwargs, **overrides})

    @property
    def depth(self) -> int:
        """Total number of layers."""
        return int(self.num_hidden_layers)

    @property
    def exit_points(self) -> list[int]:
        """Layers (1-based) followed by an exit head, ascending; the last is the full depth."""
        assert self.exit_layers is not None
        return list(self.exit_layers)

    @property
    def contextual_layers(self) -> int:
        """Number of layers of the lower block, whose output state feeds the upper layers' keys/values."""
        return self.exit_points[0]


__all__ = ["LEGOConfig"]
