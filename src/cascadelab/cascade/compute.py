"""Inference compute per item in FLOPs: 2 × parameters × tokens processed (prompt + generated) per forward pass.

A cascade item costs its coarse pass, LIMEN's scoring passes (the frozen coarse model reads the prompt and
the scored output once each time LIMEN judges one) and every uncached refiner pass (the refiner reads its
input and writes its output). The logistic head on top of LIMEN's features is negligible and not counted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from cascadelab.cascade.cascade import CascadeTrace


def parameter_count(models: Sequence[PreTrainedModel]) -> int:
    """Parameters of one forward pass's model (the largest of `models`, e.g. the per-family refiners)."""
    return max(sum(p.numel() for p in model.parameters()) for model in models)


@dataclass(frozen=True)
class FlopCounter:
    """FLOPs of the passes of one cascade (coarse and refiner parameter counts, the tokenizer that counts)."""

    tokenizer: PreTrainedTokenizerBase
    coarse_params: int
    refiner_params: int

    def tokens(self, text: str) -> int:
        """Tokens of `text` (no special tokens)."""
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def coarse_pass(self, prompt: str, generated: int) -> float:
        """A coarse (or same-size control) pass: the prompt read, `generated` tokens written."""
        return 2.0 * self.coarse_params * (self.tokens(prompt) + generated)

    def limen_pass(self, prompt: str, output: str) -> float:
        """LIMEN scoring one output: the frozen coarse model reads the prompt and the output."""
        return 2.0 * self.coarse_params * (self.tokens(prompt) + self.tokens(output))

    def refiner_pass(self, refiner_input: str, generated: int) -> float:
        """A refiner pass: its input read, `generated` tokens written."""
        return 2.0 * self.refiner_params * (self.tokens(refiner_input) + generated)

    def trace(self, trace: CascadeTrace) -> float:
        """FLOPs of one traced item: coarse pass, LIMEN's scoring passes, uncached refiner passes."""
        flops = self.coarse_pass(trace.prompt, trace.coarse_tokens) if trace.coarse is not None else 0.0
        if trace.coarse_decision is not None:
            flops += self.limen_pass(trace.prompt, trace.coarse or "")
        for refinement in trace.passes:
            if not refinement.cached:
                flops += self.refiner_pass(refinement.input, refinement.tokens)
            if refinement.decision is not None:
                flops += self.limen_pass(trace.prompt, refinement.output)
        return flops
