"""Paired bootstrap intervals over test items: resample items (with replacement), keep each item's columns together.

Over several training seeds, `hierarchical_bootstrap` resamples the seeds, then the items within each drawn seed.
Every statistic a claim needs is a function of column means over the resampled items (an exact-match
difference, a ratio of perplexities from summed losses and token counts, a break rate as a ratio of two
counts), so one resample is a vector of item counts and each column's mean is one matrix product.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

Means = Mapping[str, np.ndarray]
Statistic = Callable[[Means], np.ndarray]


@dataclass(frozen=True)
class Interval:
    """A percentile bootstrap interval of a statistic, with the statistic on the full sample."""

    estimate: float
    low: float
    high: float
    confidence: float
    resamples: int
    items: int  # over all seeds
    seeds: int = 1


def paired_bootstrap(
    columns: Mapping[str, np.ndarray],
    statistic: Statistic,
    resamples: int,
    confidence: float,
    seed: int | list[int],
) -> Interval:
    """The `confidence` percentile interval of `statistic` over `resamples` paired resamples of the items.

    `columns` are per-item arrays of one length (row i of every column is test item i); `statistic`
    maps column means (each an array over resamples) to the statistic's values. Seeded: the same inputs
    give the same interval.
    """
    data = _items(columns, "paired_bootstrap")
    rng = np.random.default_rng(seed)
    values = _resampled(data, statistic, resamples, rng)
    low, high = _percentiles(values, confidence)
    return Interval(_full(data, statistic), low, high, confidence, resamples, _length(data))


def hierarchical_bootstrap(
    seeds: Sequence[Mapping[str, np.ndarray]],
    statistic: Statistic,
    resamples: int,
    confidence: float,
    seed: int | list[int],
) -> Interval:
    """The `confidence` interval of the mean over training seeds of each seed's `statistic`, two-stage resampled.

    `seeds` holds one `columns` mapping (as `paired_bootstrap` takes) per training seed. One resample draws
    as many seeds as there are, with replacement, then resamples the items of each drawn seed (paired, and
    afresh for a seed drawn twice), and averages the drawn seeds' statistics: the interval carries both the
    seed-to-seed spread and each seed's item noise. The estimate is the mean of the seeds' full-sample
    statistics. Seeded: the same inputs give the same interval.
    """
    if not seeds:
        raise ValueError("hierarchical_bootstrap: no seeds")
    data = [_items(columns, "hierarchical_bootstrap") for columns in seeds]
    if len({tuple(sorted(d)) for d in data}) != 1:
        raise ValueError("hierarchical_bootstrap: the seeds' columns differ in name")
    rng = np.random.default_rng(seed)
    drawn = rng.integers(0, len(data), size=(resamples, len(data)))
    total = np.zeros(resamples)
    for slot in range(len(data)):
        for index, columns in enumerate(data):
            rows = np.flatnonzero(drawn[:, slot] == index)
            if rows.size:
                total[rows] += _resampled(columns, statistic, rows.size, rng)
    low, high = _percentiles(total / len(data), confidence)
    estimate = float(np.mean([_full(columns, statistic) for columns in data]))
    items = sum(_length(columns) for columns in data)
    return Interval(estimate, low, high, confidence, resamples, items, len(data))


def _items(columns: Mapping[str, np.ndarray], caller: str) -> dict[str, np.ndarray]:
    """The columns as float arrays of one non-zero length, or a one-line error naming `caller`."""
    lengths = {len(values) for values in columns.values()}
    if len(lengths) != 1:
        raise ValueError(f"{caller}: columns differ in length ({sorted(lengths)})")
    if lengths == {0}:
        raise ValueError(f"{caller}: no items")
    return {name: np.asarray(values, dtype=np.float64) for name, values in columns.items()}


def _length(data: Mapping[str, np.ndarray]) -> int:
    return len(next(iter(data.values())))


def _full(data: Mapping[str, np.ndarray], statistic: Statistic) -> float:
    """The statistic on the whole sample."""
    return float(statistic({name: np.array([values.mean()]) for name, values in data.items()})[0])


def _resampled(
    data: Mapping[str, np.ndarray], statistic: Statistic, resamples: int, rng: np.random.Generator
) -> np.ndarray:
    """The statistic over `resamples` resamples of the items: one multinomial count vector per resample."""
    n = _length(data)
    counts = rng.multinomial(n, np.full(n, 1.0 / n), size=resamples).astype(np.float64)
    return np.asarray(statistic({name: counts @ column / n for name, column in data.items()}))


def _percentiles(values: np.ndarray, confidence: float) -> tuple[float, float]:
    tail = (1.0 - confidence) / 2.0
    low, high = np.nanquantile(values, [tail, 1.0 - tail])
    return float(low), float(high)
