"""Counters of the SIGMA features that actually executed (the seed's ``feature_<name>_effective_calls``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

FEATURES: tuple[str, ...] = ("mamba", "mla", "diff_attn", "moe", "bitlinear", "instant", "triton")


class FeatureCalls(dict[str, int]):
    """Per-feature execution counts shared by every module of one model.

    A module calls :meth:`hit` where its feature runs. While activation checkpointing recomputes a
    block during backward, :attr:`recomputing` is true: counts and other once-per-step side effects
    (the MoE bias update) are skipped, so a step is counted once whether or not it is recomputed.
    """

    def __init__(self) -> None:
        super().__init__(dict.fromkeys(FEATURES, 0))
        self.recomputing = False

    def hit(self, name: str, n: int = 1) -> None:
        """Count ``n`` executions of feature ``name`` (ignored during checkpoint recomputation)."""
        if name not in self:
            raise ValueError(f"unknown feature {name!r}; known: {', '.join(FEATURES)}")
        if not self.recomputing:
            self[name] += n

    @contextmanager
    def recompute(self, active: bool = True) -> Iterator[None]:
        """Mark the enclosed forward as a checkpoint recomputation when ``active``."""
        previous, self.recomputing = self.recomputing, active or self.recomputing
        try:
            yield
        finally:
            self.recomputing = previous

    def reset(self) -> None:
        """Zero every counter."""
        for name in self:
            self[name] = 0
