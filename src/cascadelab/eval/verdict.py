"""The claims verdict rule: where an effect's interval lies against the threshold declared before the run."""

from __future__ import annotations

from typing import Literal

Verdict = Literal["holds", "refuted", "inconclusive"]


def verdict(low: float | None, high: float | None, threshold: float, direction: str) -> Verdict:
    """holds / refuted / inconclusive for an effect whose interval is [low, high] (None: no interval).

    `above`: holds when the whole interval exceeds the threshold, refuted when none of it does.
    `below`: holds when the whole interval is under the threshold, refuted when none of it is.
    An interval that straddles the threshold, or no interval at all, is inconclusive.
    """
    if direction not in ("above", "below"):
        raise ValueError(f"verdict: direction must be 'above' or 'below' (got {direction!r})")
    if low is None or high is None:
        return "inconclusive"
    if low > high:
        raise ValueError(f"verdict: interval low {low} is above its high {high}")
    if direction == "above":
        return "holds" if low > threshold else "refuted" if high <= threshold else "inconclusive"
    return "holds" if high < threshold else "refuted" if low >= threshold else "inconclusive"
