"""The claims table: each seed claim's system against its baseline, the effect with its interval, and the verdict.

Values come from the stages' metrics files; the interval from a paired bootstrap over the test items the
stages list one a line in `plots/<stage>/items.jsonl` (items of several stages pair up by item id). Where
a stage wrote no per-item file, the entry says `interval: not available (why)` and stays inconclusive:
no interval is ever made up. A claim no stage of this run measures is listed with the reason.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from cascadelab.config import ClaimsParams, ClaimThreshold
from cascadelab.eval.bootstrap import Interval, Statistic, paired_bootstrap
from cascadelab.eval.verdict import verdict

Figures = Mapping[str, Mapping[str, Any]]  # stage -> its metrics merged with its timing file
Items = Mapping[str, Sequence[Mapping[str, Any]] | None]  # stage -> its per-item test rows (None: no file)
Compute = dict[str, Any]


@dataclass(frozen=True)
class ItemColumns:
    """How a claim reads per-item data: columns computed from an item's `stage.key` fields, and its statistic."""

    columns: Mapping[str, Callable[[Mapping[str, Any]], float]]
    statistic: Statistic
    stages: tuple[str, ...]
    where: Callable[[Mapping[str, Any]], bool] | None = None  # which joined rows the claim reads (None: all)


@dataclass(frozen=True)
class ClaimDef:
    """One seed claim: what it compares, how its values, interval and compute are read."""

    name: str
    claim: str
    system: str
    baseline: str
    metric: str
    effect: Literal["difference", "ratio", "value"]
    values: Callable[[Figures], tuple[float | None, float | None]]
    items: ItemColumns | None = None
    no_items_reason: str = ""
    compute: Callable[[Figures], tuple[Compute, Compute]] = lambda _: ({}, {})
    unmeasured: Callable[[Figures], str | None] = lambda _: None
    notes: str = ""
    dynamic_notes: Callable[[Figures], str] = lambda _: ""  # notes read from the figures (secondary numbers)


@dataclass
class ClaimEntry:
    """A claim's row of the table (see `as_dict` for the JSON)."""

    name: str
    claim: str
    system: str
    baseline: str
    metric: str
    system_value: float | None
    baseline_value: float | None
    effect: float | None
    interval: list[float] | None
    interval_note: str
    threshold: float
    direction: str
    verdict: str
    compute: dict[str, Compute] = field(default_factory=dict)
    notes: str = ""

    def as_dict(self) -> dict[str, Any]:
        """The JSON form written to metrics/claims.json."""
        return dict(self.__dict__)


def _effect(kind: str, system: float | None, baseline: float | None) -> float | None:
    if system is None or baseline is None:
        return None
    if kind == "difference":
        return system - baseline
    if kind == "ratio":
        return system / baseline if baseline else None
    return system


def _joined(stages: Sequence[str], items: Items) -> tuple[list[dict[str, Any]] | None, str]:
    """The stages' item rows joined by id (keys `stage.key`), or None and why not."""
    tables: list[dict[str, Mapping[str, Any]]] = []
    for stage in stages:
        rows = items.get(stage)
        if rows is None:
            return None, f"plots/{stage}/items.jsonl not written: rerun `dvc repro {stage}`"
        tables.append({str(r["id"]): r for r in rows})
    ids = set(tables[0])
    if any(set(t) != ids for t in tables[1:]):
        return None, f"the test items of {' and '.join(stages)} differ"
    joined = [
        {f"{s}.{k}": v for s, t in zip(stages, tables, strict=True) for k, v in t[i].items()} for i in sorted(ids)
    ]
    return joined, ""


def claim_columns(spec: ClaimDef, items: Items) -> tuple[dict[str, np.ndarray] | None, str]:
    """The per-item columns a claim's interval resamples (row i: test item i), or None and why there are none."""
    if spec.items is None:
        return None, spec.no_items_reason or "no per-item data for this metric"
    rows, why = _joined(spec.items.stages, items)
    if rows is None:
        return None, why
    if spec.items.where is not None:
        rows = [r for r in rows if spec.items.where(r)]
    if not rows:
        return None, "no test items"
    return {name: np.array([read(r) for r in rows], dtype=np.float64) for name, read in spec.items.columns.items()}, ""


def claim_stream(spec: ClaimDef, seed: int) -> list[int]:
    """The claim's own bootstrap stream: adding or reordering claims leaves every other claim's interval as it was."""
    return [seed, zlib.crc32(spec.name.encode())]


def _interval(spec: ClaimDef, items: Items, params: ClaimsParams, seed: int) -> tuple[Interval | None, str]:
    columns, why = claim_columns(spec, items)
    if columns is None or spec.items is None:
        return None, why
    stream = claim_stream(spec, seed)
    return paired_bootstrap(columns, spec.items.statistic, params.resamples, params.confidence, stream), ""


def build_entry(spec: ClaimDef, figures: Figures, items: Items, params: ClaimsParams, seed: int) -> ClaimEntry:
    """A measured claim's entry: values, effect, interval (or why none), threshold, verdict, compute."""
    rule: ClaimThreshold = getattr(params, spec.name)
    system, baseline = spec.values(figures)
    effect = _effect(spec.effect, system, baseline)
    interval, why = _interval(spec, items, params, seed)
    bounds = None if interval is None else [interval.low, interval.high]
    note = (
        f"paired bootstrap over {interval.items} test items, {interval.resamples} resamples"
        if interval is not None
        else f"not available ({why})"
    )
    if interval is not None and effect is not None and not np.isclose(interval.estimate, effect, rtol=1e-4, atol=1e-9):
        note += f"; the items give {interval.estimate:.6g} where the metrics give {effect:.6g}"
    system_compute, baseline_compute = spec.compute(figures)
    return ClaimEntry(
        spec.name, spec.claim, spec.system, spec.baseline, spec.metric, system, baseline, effect, bounds, note,
        rule.threshold, rule.direction,
        verdict(bounds[0] if bounds else None, bounds[1] if bounds else None, rule.threshold, rule.direction),
        {"system": system_compute, "baseline": baseline_compute},
        "; ".join(n for n in (spec.notes, spec.dynamic_notes(figures)) if n),
    )  # fmt: skip


@dataclass
class ClaimsTable:
    """Every measured claim's entry, and the claims this run does not measure with the reason."""

    entries: list[ClaimEntry]
    unmeasured: list[dict[str, str]]
    confidence: float

    def as_dict(self) -> dict[str, Any]:
        """The JSON of metrics/claims.json."""
        counts = {v: sum(e.verdict == v for e in self.entries) for v in ("holds", "refuted", "inconclusive")}
        return {
            "confidence": self.confidence,
            "verdicts": counts,
            "claims": [e.as_dict() for e in self.entries],
            "unmeasured": self.unmeasured,
        }

    def headline(self) -> dict[str, float]:
        """Each claim's effect, interval and verdict (+1 holds, 0 inconclusive, -1 refuted) as run metrics."""
        return verdict_metrics(self.entries, "claim")


class _Verdicted(Protocol):
    name: str
    verdict: str
    effect: float | None
    interval: Any


def verdict_metrics(entries: Sequence[_Verdicted], prefix: str) -> dict[str, float]:
    """`<prefix>.<claim>.{verdict,effect,low,high}` run metrics (verdict: +1 holds, 0 inconclusive, -1 refuted)."""
    code = {"holds": 1.0, "inconclusive": 0.0, "refuted": -1.0}
    values: dict[str, float] = {}
    for entry in entries:
        values[f"{prefix}.{entry.name}.verdict"] = code[entry.verdict]
        if entry.effect is not None:
            values[f"{prefix}.{entry.name}.effect"] = entry.effect
        if entry.interval is not None:
            values[f"{prefix}.{entry.name}.low"], values[f"{prefix}.{entry.name}.high"] = entry.interval
    return values


def build_claims(
    specs: Sequence[ClaimDef], figures: Figures, items: Items, params: ClaimsParams, seed: int
) -> ClaimsTable:
    """The claims table of `specs` from the stages' figures and per-item rows."""
    entries, unmeasured = [], []
    for spec in specs:
        reason = spec.unmeasured(figures)
        if reason:
            unmeasured.append({"name": spec.name, "claim": spec.claim, "system": spec.system,
                               "baseline": spec.baseline, "reason": reason})  # fmt: skip
        else:
            entries.append(build_entry(spec, figures, items, params, seed))
    return ClaimsTable(entries, unmeasured, params.confidence)


def read_items(path: Path) -> list[dict[str, Any]] | None:
    """The rows of a stage's `items.jsonl`, or None when the stage wrote none."""
    if not path.is_file():
        return None
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
