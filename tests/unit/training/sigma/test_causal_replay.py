"""Causal replay: admission, bounds, eviction, priorities and determinism."""

from __future__ import annotations

from collections import Counter

import pytest

from cascadelab.training.sigma.causal_replay import CausalReplay, ReplaySample


def _s(name: str, advantage: float, step: int = 0, reward: float = 1.0) -> ReplaySample:
    return ReplaySample(prompt=f"p-{name}", completion=f"c-{name}", reward=reward, advantage=advantage, step=step)


def test_only_above_threshold_advantages_are_admitted() -> None:
    replay = CausalReplay(capacity=4, min_advantage=0.0)
    assert replay.add(_s("good", 0.5))
    assert not replay.add(_s("zero", 0.0))
    assert not replay.add(_s("bad", -1.0))
    assert len(replay) == 1
    assert (replay.admitted, replay.rejected) == (1, 2)


def test_buffer_is_bounded_and_evicts_the_lowest_priority() -> None:
    replay = CausalReplay(capacity=3)
    replay.extend([_s("a", 1.0), _s("b", 3.0), _s("c", 2.0)])
    assert replay.add(_s("d", 5.0))
    assert len(replay) == 3
    assert [s.prompt for s in replay.samples] == ["p-b", "p-c", "p-d"]
    assert not replay.add(_s("e", 0.5))  # lower than everything stored: evicted at once
    assert len(replay) == 3 and replay.evicted == 2
    for i in range(50):
        replay.add(_s(f"x{i}", 0.1 * i))
        assert len(replay) <= 3


def test_equal_priorities_evict_the_oldest() -> None:
    replay = CausalReplay(capacity=2)
    replay.extend([_s("first", 1.0), _s("second", 1.0), _s("third", 1.0)])
    assert [s.prompt for s in replay.samples] == ["p-second", "p-third"]


def test_high_advantage_samples_are_replayed_more_often() -> None:
    replay = CausalReplay(capacity=10, seed=3)
    replay.extend([_s("low", 0.1), _s("mid", 1.0), _s("high", 10.0)])
    counts: Counter[str] = Counter()
    for _ in range(2000):
        counts[replay.sample(1)[0].prompt] += 1
    assert counts["p-high"] > counts["p-mid"] > counts["p-low"]
    assert counts["p-high"] > 1500  # weight 10 of 11.1: about 90 %
    assert replay.counters() == {"feature_causal_replay_effective_calls": 2000}


def test_priority_follows_advantage_alpha_and_staleness() -> None:
    replay = CausalReplay(capacity=4, alpha=2.0, min_advantage=0.5, staleness_decay=0.5)
    sample = _s("a", 2.5, step=10)
    assert replay.priority(sample) == pytest.approx(4.0)
    assert replay.priority(sample, step=12) == pytest.approx(1.0)
    assert replay.priority(_s("b", 0.4)) == 0.0


def test_stale_samples_lose_to_fresh_ones_of_equal_advantage() -> None:
    replay = CausalReplay(capacity=10, staleness_decay=0.1, seed=0)
    replay.extend([_s("old", 1.0, step=0), _s("new", 1.0, step=5)])
    draws = Counter(replay.sample(1, step=5)[0].prompt for _ in range(500))
    assert draws["p-new"] > 450


def test_draws_are_distinct_bounded_and_deterministic() -> None:
    def draws(seed: int) -> list[list[str]]:
        replay = CausalReplay(capacity=20, seed=seed)
        replay.extend([_s(str(i), 1.0 + i) for i in range(10)])
        return [[s.prompt for s in replay.sample(4)] for _ in range(5)]

    first = draws(7)
    assert first == draws(7)
    assert first != draws(8)
    assert all(len(batch) == 4 and len(set(batch)) == 4 for batch in first)
    replay = CausalReplay(capacity=5)
    assert replay.sample(3) == []
    replay.add(_s("only", 1.0))
    assert [s.prompt for s in replay.sample(3)] == ["p-only"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"capacity": 0}, "capacity: must be > 0"),
        ({"capacity": 2, "alpha": -1.0}, "alpha: must be >= 0"),
        ({"capacity": 2, "staleness_decay": 0.0}, r"staleness_decay: must be in \(0, 1\]"),
    ],
)
def test_bad_settings_are_one_line_errors(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CausalReplay(**kwargs)  # type: ignore[arg-type]
