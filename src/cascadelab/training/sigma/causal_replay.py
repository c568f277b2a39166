"""Causal replay: a bounded buffer of past RL samples that feeds high-advantage ones into later batches.

A sample is admitted only when its advantage exceeds ``min_advantage`` (it did better than its group).
Its priority is ``(advantage - min_advantage) ** alpha``, discounted by ``staleness_decay ** age`` where
age is the number of policy steps since it was generated (older samples came from an older policy).
When the buffer is full the lowest-priority sample is evicted (the oldest among equals). `sample` draws
without replacement with probability proportional to priority (Efraimidis–Spirakis keys) from a seeded
`random.Random`, so the same seed and the same calls give the same draws.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class ReplaySample:
    """One RL sample: what was asked, what the policy wrote, how it scored, and when."""

    prompt: str
    completion: str
    reward: float
    advantage: float
    step: int


class CausalReplay:
    """Bounded, prioritised replay of high-advantage samples."""

    def __init__(
        self,
        capacity: int,
        alpha: float = 1.0,
        min_advantage: float = 0.0,
        staleness_decay: float = 1.0,
        seed: int = 0,
    ) -> None:
        if capacity <= 0:
            raise ValueError("causal_replay.capacity: must be > 0")
        if alpha < 0:
            raise ValueError("causal_replay.alpha: must be >= 0")
        if not 0.0 < staleness_decay <= 1.0:
            raise ValueError("causal_replay.staleness_decay: must be in (0, 1]")
        self.capacity = capacity
        self.alpha = alpha
        self.min_advantage = min_advantage
        self.staleness_decay = staleness_decay
        self._rng = random.Random(seed)
        self._samples: list[ReplaySample] = []
        self._order: list[int] = []  # insertion counter of each stored sample, for oldest-first ties
        self._added = 0
        self.admitted = 0
        self.rejected = 0
        self.evicted = 0
        self.replayed = 0  # samples handed back by `sample`
        self.replay_calls = 0  # `sample` calls that returned at least one sample

    def __len__(self) -> int:
        return len(self._samples)

    @property
    def samples(self) -> list[ReplaySample]:
        """The stored samples, oldest first."""
        return [sample for _, sample in sorted(zip(self._order, self._samples, strict=True))]

    def priority(self, sample: ReplaySample, step: int | None = None) -> float:
        """The sampling weight of `sample` at policy step `step` (default: its own step)."""
        base = max(sample.advantage - self.min_advantage, 0.0) ** self.alpha
        age = 0 if step is None else max(step - sample.step, 0)
        return float(base * self.staleness_decay**age)

    def add(self, sample: ReplaySample) -> bool:
        """Store `sample` if its advantage qualifies; returns whether it is in the buffer afterwards."""
        if sample.advantage <= self.min_advantage:
            self.rejected += 1
            return False
        self._samples.append(sample)
        self._order.append(self._added)
        self._added += 1
        self.admitted += 1
        if len(self._samples) > self.capacity:
            step = max(s.step for s in self._samples)
            victim = min(
                range(len(self._samples)), key=lambda i: (self.priority(self._samples[i], step), self._order[i])
            )
            self._samples.pop(victim)
            order = self._order.pop(victim)
            self.evicted += 1
            return order != self._added - 1
        return True

    def extend(self, samples: list[ReplaySample]) -> int:
        """Add several samples; returns how many were admitted."""
        return sum(self.add(sample) for sample in samples)

    def sample(self, k: int, step: int | None = None) -> list[ReplaySample]:
        """Up to `k` distinct samples, drawn with probability proportional to priority at `step`."""
        if k < 0:
            raise ValueError("causal_replay.sample: k must be >= 0")
        weighted = [(self.priority(s, step), order, s) for order, s in zip(self._order, self._samples, strict=True)]
        weighted = [item for item in weighted if item[0] > 0]
        keyed = sorted(((self._rng.random() ** (1.0 / w), order, s) for w, order, s in weighted), reverse=True)
        chosen = [s for _, _, s in keyed[:k]]
        self.replayed += len(chosen)
        self.replay_calls += 1 if chosen else 0
        return chosen

    def counters(self) -> dict[str, int]:
        """The trainer's `feature_causal_replay_effective_calls` counter."""
        return {"feature_causal_replay_effective_calls": self.replay_calls}
