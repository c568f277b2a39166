"""Paired bootstrap intervals over test items: resample items (with replacement), keep each item's columns together.

Every statistic a claim needs is a function of column means over the resampled items (an exact-match
difference, a ratio of perplexities from summed losses and token counts, a break rate as a ratio of two
counts), so one resample is a vector of item counts and each column's mean is one matrix product.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
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
    items: int


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
    lengths = {len(values) for values in columns.values()}
    if len(lengths) != 1:
        raise ValueError(f"paired_bootstrap: columns differ in length ({sorted(lengths)})")
    (n,) = lengths
    if n == 0:
        raise ValueError("paired_bootstrap: no items")
    data = {name: np.asarray(values, dtype=np.float64) for name, values in columns.items()}
    full = float(statistic({name: np.array([values.mean()]) for name, values in data.items()})[0])
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n, np.full(n, 1.0 / n), size=resamples).astype(np.float64)
    values = statistic({name: counts @ column / n for name, column in data.items()})
    tail = (1.0 - confidence) / 2.0
    low, high = np.nanquantile(values, [tail, 1.0 - tail])
    return Interval(full, float(low), float(high), confidence, resamples, n)
