"""Claims over training seeds: each seed's effect, and one interval pooled over the seeds with its verdict.

`make claims` retrains the stages of the claims whose one-seed effect lies near their threshold at other
`training_seed`s, on the same corpus and test items. A claim is decided over seeds by the same definition
(`ClaimDef`), threshold and verdict rule as the one-seed table; only the interval differs: a hierarchical
bootstrap (resample the seeds, then the test items within each drawn seed) around the mean of the seeds'
effects. Claims without per-item data, or whose stages are not rerun at other seeds, are listed with why.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cascadelab.config import ClaimsParams, ClaimThreshold
from cascadelab.eval.bootstrap import hierarchical_bootstrap
from cascadelab.eval.verdict import verdict
from cascadelab.report.claims import (
    ClaimDef,
    ClaimEntry,
    Figures,
    Items,
    build_entry,
    claim_columns,
    claim_stream,
    verdict_metrics,
)


@dataclass(frozen=True)
class SeedRun:
    """One training seed's stage figures and per-item test rows (the default run is the first)."""

    training_seed: int
    source: str  # where its files came from: "the default run" or the experiment's name and commit
    figures: Figures
    items: Items


@dataclass
class SeedClaim:
    """A claim decided over seeds (see `as_dict` for the JSON)."""

    name: str
    claim: str
    metric: str
    per_seed: list[dict[str, Any]]  # training_seed, effect, interval, verdict of each seed alone
    effect: float | None  # mean over seeds of each seed's effect on its test items
    interval: list[float] | None
    interval_note: str
    threshold: float
    direction: str
    verdict: str

    def as_dict(self) -> dict[str, Any]:
        """The JSON form written to metrics/claims_seeds.json."""
        return dict(self.__dict__)


@dataclass
class SeedClaimsTable:
    """Every claim decided over the seed runs, and the claims left out with the reason."""

    runs: list[dict[str, Any]]  # training_seed and source of each run, the default first
    entries: list[SeedClaim]
    left_out: list[dict[str, str]]
    confidence: float
    wall: dict[str, Any] = field(default_factory=dict)  # the estimate of `make claims`'s wall time
    near: list[dict[str, Any]] = field(default_factory=list)  # one-seed claims near their threshold (`near_threshold`)

    def as_dict(self) -> dict[str, Any]:
        """The JSON of metrics/claims_seeds.json."""
        counts = {v: sum(e.verdict == v for e in self.entries) for v in ("holds", "refuted", "inconclusive")}
        return {
            "confidence": self.confidence,
            "runs": self.runs,
            "verdicts": counts,
            "claims": [e.as_dict() for e in self.entries],
            "left_out": self.left_out,
            "make_claims_wall": self.wall,
            "near_threshold_at_one_seed": self.near,
        }

    def headline(self) -> dict[str, float]:
        """Each claim's verdict over seeds (+1 holds, 0 inconclusive, -1 refuted), mean effect and interval."""
        return verdict_metrics(self.entries, "claim_seeds")


def why_not_over_seeds(spec: ClaimDef, seeded: Sequence[str]) -> str | None:
    """Why a claim is not decided over seeds (None: it is): no per-item data, or stages not rerun at other seeds."""
    if spec.items is None:
        return f"no per-item data ({spec.no_items_reason or 'no interval at one seed either'})"
    missing = [stage for stage in spec.items.stages if stage not in seeded]
    if missing:
        return f"{', '.join(missing)} not rerun at other training seeds (`make claims` reruns {', '.join(seeded)})"
    return None


def _pooled(spec: ClaimDef, runs: Sequence[SeedRun], params: ClaimsParams, seed: int) -> tuple[Any, str]:
    """The hierarchical bootstrap interval over the runs' items, or None and why there is none."""
    per_seed = []
    for run in runs:
        columns, why = claim_columns(spec, run.items)
        if columns is None:
            return None, f"training seed {run.training_seed}: {why}"
        per_seed.append(columns)
    assert spec.items is not None  # claim_columns returned columns
    stream = [*claim_stream(spec, seed), len(runs)]  # apart from the one-seed interval's stream
    return hierarchical_bootstrap(per_seed, spec.items.statistic, params.resamples, params.confidence, stream), ""


def build_seed_claim(spec: ClaimDef, runs: Sequence[SeedRun], params: ClaimsParams, seed: int) -> SeedClaim:
    """A claim over `runs`: each seed's entry as the one-seed table builds it, then the pooled interval and verdict."""
    rule: ClaimThreshold = getattr(params, spec.name)
    per_seed = []
    for run in runs:
        entry = build_entry(spec, run.figures, run.items, params, seed)
        per_seed.append({"training_seed": run.training_seed, "effect": entry.effect, "interval": entry.interval,
                         "verdict": entry.verdict})  # fmt: skip
    interval, why = _pooled(spec, runs, params, seed)
    if interval is None:
        return SeedClaim(spec.name, spec.claim, spec.metric, per_seed, None, None, f"not available ({why})",
                         rule.threshold, rule.direction, "inconclusive")  # fmt: skip
    note = (
        f"hierarchical bootstrap over {interval.seeds} training seeds (resampled), then their test items "
        f"({interval.items} in all), {interval.resamples} resamples"
    )
    bounds = [interval.low, interval.high]
    decided = verdict(interval.low, interval.high, rule.threshold, rule.direction)
    return SeedClaim(spec.name, spec.claim, spec.metric, per_seed, interval.estimate, bounds, note,
                     rule.threshold, rule.direction, decided)  # fmt: skip


def build_seed_claims(
    specs: Sequence[ClaimDef], runs: Sequence[SeedRun], seeded: Sequence[str], params: ClaimsParams, seed: int
) -> SeedClaimsTable:
    """The claims of `specs` over `runs` (the default run first); `seeded`: the stages the seed runs retrain."""
    entries, left_out = [], []
    for spec in specs:
        reason = why_not_over_seeds(spec, seeded) or next(
            filter(None, (spec.unmeasured(r.figures) for r in runs)), None
        )
        if reason:
            left_out.append({"name": spec.name, "claim": spec.claim, "reason": reason})
        else:
            entries.append(build_seed_claim(spec, runs, params, seed))
    described = [{"training_seed": r.training_seed, "source": r.source} for r in runs]
    return SeedClaimsTable(described, entries, left_out, params.confidence)


def wall_estimate(seconds: Mapping[str, float], seeded: Sequence[str], extra_seeds: int) -> dict[str, Any]:
    """`make claims`'s wall time estimated from the default run's stage times: their sum × the extra seeds."""
    missing = [stage for stage in seeded if stage not in seconds]
    per_seed = float(np.sum([seconds[stage] for stage in seeded if stage in seconds]))
    return {
        "stages": list(seeded),
        "extra_seeds": extra_seeds,
        "seconds_per_seed": per_seed,
        "seconds": per_seed * extra_seeds,
        "missing_stage_times": missing,
        "how": "estimate: the sum of the retrained stages' `stage_seconds` in the default run × the extra seeds "
        "(queued experiments run one at a time); a measured `make claims` run replaces it",
    }


def near_threshold(
    entries: Sequence[ClaimEntry], seeded: Sequence[str], specs: Sequence[ClaimDef]
) -> list[dict[str, Any]]:
    """The one-seed claims whose effect lies within twice its interval's half-width of the threshold, and whether
    `make claims` reruns them: the claims that need more than one seed."""
    by_name = {spec.name: spec for spec in specs}
    near = []
    for entry in entries:
        if entry.effect is None or entry.interval is None:
            continue
        half_width = (entry.interval[1] - entry.interval[0]) / 2.0
        if abs(entry.effect - entry.threshold) <= 2.0 * half_width:
            spec = by_name.get(entry.name)
            over = spec is not None and why_not_over_seeds(spec, seeded) is None
            near.append({"name": entry.name, "claim": entry.claim, "over_seeds": over})
    return near
