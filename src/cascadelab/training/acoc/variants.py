"""The variant vote: five small weight deltas around the current model, a relative threshold, a model soup.

ACOC v0.2 (problem 1 of the analysis): a fixed score threshold made every variant vote "expand". Here a
variant votes "expand" when its validation score is below `ratio` (95 %) of the mean of the last `window`
(5) cycle scores, so the bar moves with the model. The deltas are Gaussian, scaled per tensor by
`noise` × the tensor's RMS, drawn from a generator passed in. After the vote the best `merge_top` deltas
are averaged with weights proportional to their scores (a model soup around the current weights) and
kept only if the merged model scores at least as well as the current one.

With `reference: current` the bar is `ratio` × the current model's own score instead: a variant votes
"expand" when a perturbation of `noise` × RMS costs more than 1 − ratio of the score (a sharpness test),
which moves with the model even while its loss keeps falling (the historic mean then never catches up).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from cascadelab.config import VoteParams
from cascadelab.models.acoc.accounting import unique_parameters
from cascadelab.models.acoc.modeling_acoc import ACOCForCausalLM


@dataclass
class VoteResult:
    """Scores, votes and the soup merge of one cycle."""

    base_score: float
    threshold: float
    scores: list[float]
    votes: list[bool]
    merged: bool = False
    merged_score: float | None = None
    merge_weights: list[float] = field(default_factory=list)
    merge_indices: list[int] = field(default_factory=list)

    @property
    def expand_votes(self) -> int:
        """Variants voting "expand"."""
        return sum(self.votes)

    @property
    def expand(self) -> bool:
        """A strict majority of the variants voted "expand"."""
        return 2 * self.expand_votes > len(self.votes)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly copy."""
        return {
            "base_score": self.base_score,
            "threshold": self.threshold,
            "scores": list(self.scores),
            "votes": list(self.votes),
            "expand_votes": self.expand_votes,
            "expand": self.expand,
            "merged": self.merged,
            "merged_score": self.merged_score,
            "merge_weights": list(self.merge_weights),
            "merge_indices": list(self.merge_indices),
        }


def relative_threshold(history: Sequence[float], ratio: float = 0.95, window: int = 5) -> float:
    """`ratio` × the mean of the last `window` cycle scores."""
    if not history:
        raise ValueError("history: needs at least one cycle score")
    recent = list(history)[-window:]
    return ratio * sum(recent) / len(recent)


def make_deltas(
    model: ACOCForCausalLM, count: int, noise: float, generator: torch.Generator | None
) -> list[list[torch.Tensor]]:
    """`count` deltas, one tensor per (unique) trainable parameter, std = noise × RMS of the tensor."""
    params = [p for p in unique_parameters(model) if p.requires_grad]
    deltas = []
    for _ in range(count):
        delta = []
        for param in params:
            scale = noise * float(param.detach().pow(2).mean().sqrt())
            device = generator.device if generator is not None else param.device
            delta.append((torch.randn(param.shape, generator=generator, device=device) * scale).to(param))
        deltas.append(delta)
    return deltas


@torch.no_grad()
def vote_and_merge(
    model: ACOCForCausalLM,
    score_fn: Callable[[ACOCForCausalLM], float],
    history: Sequence[float],
    params: VoteParams,
    generator: torch.Generator | None = None,
) -> VoteResult:
    """Score `params.variants` perturbed copies, vote against the relative threshold, merge the best deltas.

    `history` holds the cycle scores so far, the current one last; `score_fn` scores the model as it is
    (higher is better, > 0). The model ends either at its original weights or at the accepted soup.
    """
    tensors = [p for p in unique_parameters(model) if p.requires_grad]
    original = [p.detach().clone() for p in tensors]
    base_score = score_fn(model)
    reference = [base_score] if params.reference == "current" else history
    threshold = relative_threshold(reference, params.ratio, params.window)
    deltas = make_deltas(model, params.variants, params.noise, generator)

    def apply(delta: Sequence[torch.Tensor]) -> None:
        for param, start, d in zip(tensors, original, delta, strict=True):
            param.copy_(start + d)

    scores = []
    for delta in deltas:
        apply(delta)
        scores.append(score_fn(model))
    result = VoteResult(base_score, threshold, scores, [score < threshold for score in scores])
    if not params.soup:
        apply([torch.zeros_like(p) for p in original])
        return result
    best = sorted(range(len(scores)), key=lambda i: -scores[i])[: params.merge_top]
    total = sum(scores[i] for i in best)
    weights = [scores[i] / total if total > 0 and math.isfinite(total) else 1.0 / len(best) for i in best]
    soup = [sum(w * deltas[i][k] for w, i in zip(weights, best, strict=True)) for k in range(len(tensors))]
    apply(soup)  # type: ignore[arg-type]
    merged_score = score_fn(model)
    result.merged_score, result.merge_weights, result.merge_indices = merged_score, weights, best
    if merged_score >= base_score:
        result.merged = True
    else:
        apply([torch.zeros_like(p) for p in original])
    return result
