"""The one rule for which of a stage's figures measure the machine, not the params, and the split it makes.

A stage hands all its figures to `pipeline.runtime.write_stage_metrics`, which writes the science to
`metrics/<stage>.json` (what `dvc metrics`, `dvc exp show` and `dvc.lock` see) and the measurements to
`plots/<stage>/timing.json` (a plain output), so two runs of the same params, or a resumed run and an
uninterrupted one, differ only in the measurement file. Measurements are read off the key's name:

- a clock: a `_`-separated word `seconds`, `s` or `ms` (`train_seconds`, `run_cpu_seconds`,
  `train_seconds_mul`, `phase_forward_s`, `train_tokens_per_s`, `latency_ms_per_item_cascade`);
- a wall-clock comparison: a word `latency` or `speedup` (`latency_ratio_cascade`, `draft_speedup`), or the
  name `step_time_ratio`;
- memory the process peaked at: `peak_memory` in the name;
- where this execution resumed: `resumed_from_step`.

Counted compute (tokens, FLOPs, parameter-steps, generated tokens per item, bytes) and ratios of counts
(`tokens_ratio_cascade`, `compute_cost`, `draft_tokens_per_forward`) are science and stay in the metrics.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

MEASUREMENT_WORDS = frozenset({"seconds", "s", "ms", "latency", "speedup"})
MEASUREMENT_NAMES = frozenset({"step_time_ratio", "resumed_from_step"})


def is_measurement(key: str) -> bool:
    """True when `key` (or the last part of a dotted key) names a measurement of the machine or of this run."""
    name = key.rsplit(".", 1)[-1]
    return name in MEASUREMENT_NAMES or "peak_memory" in name or not MEASUREMENT_WORDS.isdisjoint(name.split("_"))


def split_measurements(figures: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(science, measurements) of `figures`, nested mappings split leaf by leaf with their nesting kept."""
    science: dict[str, Any] = {}
    measured: dict[str, Any] = {}
    for key, value in figures.items():
        if isinstance(value, Mapping):
            inner_science, inner_measured = split_measurements(value)
            if inner_science or not inner_measured:
                science[key] = inner_science
            if inner_measured:
                measured[key] = inner_measured
        elif is_measurement(key):
            measured[key] = value
        else:
            science[key] = value
    return science, measured
