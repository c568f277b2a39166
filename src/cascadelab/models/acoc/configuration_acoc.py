"""Configuration of ACOC, a small transformer LM whose feed-forward layers are growable mixtures of experts.

The config records the *current* architecture: `expert_widths[layer][expert]` lists the widths of the
blocks of one expert (an expert is widened by appending a block). Growth, pruning and consolidation
rewrite it, so `from_pretrained` rebuilds a grown model with the shapes its checkpoint holds.
"""

from __future__ import annotations

from dataclasses import field
from typing import Any

from cascadelab.models.configuration_decoder import DecoderConfig


class ACOCConfig(DecoderConfig):
    """Architecture of an ACOC model: attention sizes plus the per-layer list of expert block widths.

    Fields beyond those of `DecoderConfig`:
        num_experts: Initial experts per layer (used when `expert_widths` is empty).
        expert_width: Initial hidden width of every expert (used when `expert_widths` is empty).
        expert_widths: Current widths, `[layer][expert] -> [block widths]`; overrides the two above.
        num_experts_per_tok: Experts mixed per token (top-k); 0 mixes all of them densely (softmax over all).
        norm_topk_prob: Renormalise the selected probabilities to sum to 1 under top-k.
        hidden_act: Expert activation (any `transformers.activations.ACT2FN` name).
        gate_init: Initial logit of every expert's soft gate (sigmoid(3) = 0.95).
    """

    model_type = "acoc"

    vocab_size: int = 64
    hidden_size: int = 64
    max_position_embeddings: int = 256
    initializer_range: float = 0.06  # escapes the arithmetic plateau (STACK-NOTES)
    num_experts: int = 1
    expert_width: int = 64
    expert_widths: list[list[list[int]]] = field(default_factory=list)
    num_experts_per_tok: int = 0
    norm_topk_prob: bool = True
    hidden_act: str = "gelu"
    gate_init: float = 3.0

    def __post_init__(self, **kwargs: Any) -> None:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                "hidden_size: must be divisible by num_attention_heads "
                f"({self.hidden_size} % {self.num_attention_heads})"
            )
        layers = self.num_hidden_layers
        widths = self.expert_widths
        if not widths:  # empty, or None from callers asking for the initial architecture
            if self.num_experts < 1 or self.expert_width < 1:
                raise ValueError(
                    f"num_experts and expert_width: must be >= 1 (got {self.num_experts}, {self.expert_width})"
                )
            widths = [[[self.expert_width] for _ in range(self.num_experts)] for _ in range(layers)]
        widths = [[[int(w) for w in blocks] for blocks in layer] for layer in widths]
        if len(widths) != layers:
            raise ValueError(f"expert_widths: needs one entry per layer ({len(widths)} != {layers})")
        for index, layer in enumerate(widths):
            if not layer or any(not blocks or min(blocks) < 1 for blocks in layer):
                raise ValueError(f"expert_widths[{index}]: every layer needs >= 1 expert of blocks with width >= 1")
        if self.num_experts_per_tok < 0:
            raise ValueError(f"num_experts_per_tok: must be >= 0 (got {self.num_experts_per_tok})")
        self.expert_widths = widths
        self.num_experts = len(widths[0])
        self.expert_width = widths[0][0][0]
        super().__post_init__(**kwargs)

    @property
    def experts_per_layer(self) -> list[int]:
        """Current number of experts in each layer."""
        return [len(layer) for layer in self.expert_widths]
