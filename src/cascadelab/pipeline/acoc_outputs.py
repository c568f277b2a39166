"""Shapes the growth study's runs into the stage's outputs: figures, bars, curves, items, events, history, plot.

* `study_figures`: per arm (seed means and medians), per seed (final val loss, test EM, compute saving over L at
  L*), the FLOP accounting, A's signal counts, and the issue's bars. "Saving" is the FLOP speedup of the
  growth literature, 1 − FLOPs_arm(L*) / FLOPs_L(L*) (named so because `speedup` keys are wall-clock
  measurements in this project).
* `curve_table`: seed-mean smoothed val loss of every arm on one FLOP grid (the DVC plot).
* `item_rows`: one row per (seed, test item) with every arm's exact match (the claims' paired bootstrap).
* `event_rows`, `save_history`, `plot_curves`: the event log, the raw curves as a dataset, the PNG.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from datasets import Dataset, DatasetDict

from cascadelab.config import ACOCParams
from cascadelab.eval.bootstrap import paired_bootstrap
from cascadelab.io import atomic_directory
from cascadelab.plotting import pyplot, save_figure
from cascadelab.training.acoc.speedup import flops_to_reach, loss_at, smooth, speedup, target_loss
from cascadelab.training.acoc_arms import SIGNALS, ArmRun, arm_order

Runs = Mapping[tuple[str, int], ArmRun]
GRID_POINTS = 40
PAIRS = (("G", "L"), ("G", "S"), ("L", "S"), ("A", "G"), ("A", "L"))  # (system, baseline) of each EM interval


def _curve(run: ArmRun) -> list[tuple[float, float]]:
    return [(row["flops"], row["val_loss"]) for row in run.curve]


def _arms(runs: Runs) -> list[str]:
    return sorted({arm for arm, _ in runs}, key=arm_order)


def _seeds(runs: Runs) -> list[int]:
    return sorted({seed for _, seed in runs})


def seed_figures(params: ACOCParams, runs: Runs, seed: int) -> dict[str, Any]:
    """One seed: L*, where each arm reaches it, each arm's saving over L, final val loss and test EM."""
    study = params.study
    out: dict[str, Any] = {}
    large = runs.get(("L", seed))
    target = None
    if large is not None:
        budget = large.metrics["budget_flops"]
        window = study.smooth_fraction * budget
        target = target_loss(_curve(large), budget, study.target_fraction, window)
        out["target_loss"] = target
    for arm in _arms(runs):
        run = runs.get((arm, seed))
        if run is None:
            continue
        window = study.smooth_fraction * run.metrics["budget_flops"]
        smoothed = smooth(_curve(run), window)
        row: dict[str, Any] = {
            "val_loss": run.metrics["val_loss"],
            "val_loss_smoothed": smoothed[-1][1],
            "em": run.metrics["em"],
            "train_flops": run.metrics["train_flops"],
        }
        if target is not None and large is not None:
            row["reach_flops"] = flops_to_reach(smoothed, target)
            row["saving"] = speedup(_curve(run), _curve(large), target, window) if arm != "L" else 0.0
        jumps = [abs(e["relative_change"]) for e in run.events if e["type"] in ("split_all", "split", "widen")]
        if jumps:
            row["max_growth_jump"] = max(jumps)
        out[arm] = row
    return out


def _median(values: Sequence[float | None]) -> float | None:
    """Median where a missing value (never reached) counts as −∞ saving; None when nothing was measured."""
    if not values:
        return None
    return statistics.median(float("-inf") if v is None else v for v in values)


def adaptive_figures(runs: Runs) -> dict[str, Any]:
    """A's decisions: how often each signal fired, how many growths each combination of signals caused."""
    totals: dict[str, float] = {f"signal_{s}": 0.0 for s in SIGNALS}
    causes: dict[str, int] = {}
    cycles = 0.0
    for (arm, _), run in runs.items():
        if arm != "A":
            continue
        cycles += run.metrics.get("cycles", 0.0)
        for signal in SIGNALS:
            totals[f"signal_{signal}"] += run.metrics.get(f"signal_{signal}", 0.0)
        for event in run.events:
            if event["type"] == "decision" and event["expand"]:
                key = "_and_".join(s for s in SIGNALS if event["signals"][s]) or "none"  # a valid metric name
                causes[key] = causes.get(key, 0) + 1
            if event["type"] == "split" and str(event.get("reason", "")).startswith("new task family"):
                causes["new_task"] = causes.get("new_task", 0) + 1
    decisions = [e for (arm, _), run in runs.items() if arm == "A" for e in run.events if e["type"] == "decision"]
    saturation = [float(e["max_saturation"]) for e in decisions]
    improvement = [float(e["improvement"]) for e in decisions if e.get("improvement") is not None]
    if saturation:  # a signal that never moves across its threshold is a constant, not a signal
        totals["max_saturation_min"], totals["max_saturation_max"] = min(saturation), max(saturation)
        totals["expand_votes_max"] = max(float(e["expand_votes"]) for e in decisions)
    if improvement:
        totals["improvement_min"], totals["improvement_max"] = min(improvement), max(improvement)
    for kind in ("splits", "widens", "prunes", "merges"):
        totals[kind] = sum(run.metrics.get(kind, 0.0) for (arm, _), run in runs.items() if arm == "A")
    return {"cycles": cycles, **totals, "growth_causes": causes}


def study_figures(params: ACOCParams, runs: Runs, flops: Mapping[str, float]) -> dict[str, Any]:
    """The stage's science: flops, per-arm and per-seed figures, A's signals, and the bars."""
    seeds, arms = _seeds(runs), _arms(runs)
    per_seed = {str(seed): seed_figures(params, runs, seed) for seed in seeds}
    per_arm: dict[str, Any] = {}
    for arm in arms:
        mine = [per_seed[str(s)][arm] for s in seeds if arm in per_seed[str(s)]]
        arm_runs = [runs[arm, s] for s in seeds if (arm, s) in runs]
        per_arm[arm] = {
            "em": statistics.fmean(r["em"] for r in mine),
            **{
                key: statistics.fmean(run.metrics[key] for run in arm_runs)
                for key in arm_runs[0].metrics
                if key.startswith("em_") or key in ("run_seconds", "train_seconds")
            },
            "val_loss_median": statistics.median(r["val_loss_smoothed"] for r in mine),
            "params": statistics.fmean(run.metrics["params"] for run in arm_runs),
            "train_flops": statistics.fmean(r["train_flops"] for r in mine),
        }
        if "L" in arms and arm != "L":
            savings = [r.get("saving") for r in mine]
            per_arm[arm]["saving_median"] = _median(savings)
            per_arm[arm]["saving_positive_seeds"] = sum(1 for v in savings if v is not None and v > 0)
            per_arm[arm]["never_reached_seeds"] = sum(1 for v in savings if v is None)
    figures: dict[str, Any] = {"flops": dict(flops), "arms": per_arm, "seeds": per_seed}
    if "A" in arms:
        figures["adaptive"] = adaptive_figures({key: run for key, run in runs.items() if key[0] == "A"})
        ablations = ablation_figures(per_seed, seeds, [arm for arm in arms if arm.startswith("A-")])
        if ablations:
            figures["ablations"] = ablations
    figures["bars"] = bars(per_seed, seeds, arms)
    figures["em_differences"] = em_intervals(runs)
    return figures


def _em_points(means: Mapping[str, np.ndarray]) -> np.ndarray:
    return 100.0 * (means["system"] - means["baseline"])


def em_intervals(runs: Runs, resamples: int = 2000, confidence: float = 0.95) -> dict[str, Any]:
    """Test EM differences (points) of arm pairs with a paired bootstrap interval over (seed, test item)."""
    rows = item_rows(runs)
    out: dict[str, Any] = {}
    for system, baseline in PAIRS:
        paired = [r for r in rows if system in r and baseline in r]
        if not paired:
            continue
        columns = {
            "system": np.array([float(r[system]) for r in paired]),
            "baseline": np.array([float(r[baseline]) for r in paired]),
        }
        interval = paired_bootstrap(columns, _em_points, resamples, confidence, seed=0)
        out[f"{system}_minus_{baseline}"] = {"estimate": interval.estimate, "low": interval.low, "high": interval.high}
    return out


def ablation_figures(per_seed: Mapping[str, Any], seeds: Sequence[int], variants: Sequence[str]) -> dict[str, Any]:
    """Each extra's effect: A without it minus A, per seed and as the seed mean (val loss, test EM, saving)."""
    out: dict[str, Any] = {}
    for variant in variants:
        rows = [per_seed[str(s)] for s in seeds if variant in per_seed[str(s)] and "A" in per_seed[str(s)]]
        deltas = {
            "val_loss_delta": [r[variant]["val_loss_smoothed"] - r["A"]["val_loss_smoothed"] for r in rows],
            "em_delta": [r[variant]["em"] - r["A"]["em"] for r in rows],
        }
        out[variant.removeprefix("A-")] = {
            **{f"{key}_mean": statistics.fmean(values) for key, values in deltas.items()},
            **{f"{key}_per_seed": values for key, values in deltas.items()},
        }
    return out


def _count(per_seed: Mapping[str, Any], seeds: Sequence[int], test: Any) -> int:
    return sum(1 for s in seeds if test(per_seed[str(s)]))


def _saving(row: Mapping[str, Any], arm: str) -> float:
    value = row.get(arm, {}).get("saving")
    return float("-inf") if value is None else float(value)


def bars(per_seed: Mapping[str, Any], seeds: Sequence[int], arms: Sequence[str]) -> dict[str, Any]:
    """The issue's bars for G (with S as the control), each as a measured number and a pass flag."""
    if not {"S", "L", "G"} <= set(arms):
        return {}
    n = len(seeds)
    need = max(1, n - 1)  # "at least 4 of 5"
    savings = [_saving(per_seed[str(s)], "G") for s in seeds]
    median = statistics.median(savings)
    out: dict[str, Any] = {
        "G_saving_median": median if median != float("-inf") else None,
        "G_saving_positive_seeds": sum(v > 0 for v in savings),
        "G_saving_above_S_seeds": _count(per_seed, seeds, lambda r: _saving(r, "G") > _saving(r, "S")),
        "G_final_within_1pct_of_L_seeds": _count(
            per_seed, seeds, lambda r: r["G"]["val_loss_smoothed"] <= 1.01 * r["L"]["val_loss_smoothed"]
        ),
        "G_beats_S_seeds": _count(per_seed, seeds, lambda r: r["G"]["val_loss_smoothed"] < r["S"]["val_loss_smoothed"]),
        "L_beats_S_seeds": _count(per_seed, seeds, lambda r: r["L"]["val_loss_smoothed"] < r["S"]["val_loss_smoothed"]),
        "G_max_growth_jump_pct": 100.0 * max(per_seed[str(s)]["G"].get("max_growth_jump", 0.0) for s in seeds),
        "seeds": n,
    }
    out["met"] = {
        "saving_median_20pct": median >= 0.20,
        "saving_positive": out["G_saving_positive_seeds"] >= need,
        "saving_above_S": out["G_saving_above_S_seeds"] >= need,
        "final_within_1pct_of_L": out["G_final_within_1pct_of_L_seeds"] == n,
        "beats_S": out["G_beats_S_seeds"] >= need,
        "growth_jump_1pct": out["G_max_growth_jump_pct"] <= 1.0,
    }
    return out


def curve_table(params: ACOCParams, runs: Runs) -> list[dict[str, Any]]:
    """Seed-mean smoothed val loss of every arm at `GRID_POINTS` fractions of the budget (for `dvc plots`)."""
    arms, seeds = _arms(runs), _seeds(runs)
    budget = next(iter(runs.values())).metrics["budget_flops"]
    window = params.study.smooth_fraction * budget
    smoothed = {key: smooth(_curve(run), window) for key, run in runs.items()}
    rows = []
    for i in range(1, GRID_POINTS + 1):
        x = budget * i / GRID_POINTS
        row: dict[str, Any] = {"flops": x}
        for arm in arms:
            row[arm] = statistics.fmean(loss_at(smoothed[arm, s], x) for s in seeds if (arm, s) in smoothed)
        rows.append(row)
    return rows


def curve_series(runs: Runs) -> list[tuple[int, dict[str, float]]]:
    """MLflow series: `(step, {"<arm>/seed<k>/val_loss": loss, ...})`, one call per step for every run."""
    by_step: dict[int, dict[str, float]] = {}
    for (arm, seed), run in sorted(runs.items()):
        for row in run.curve:
            by_step.setdefault(int(row["step"]), {})[f"{arm}/seed{seed}/val_loss"] = float(row["val_loss"])
    return sorted(by_step.items())


def item_rows(runs: Runs) -> list[dict[str, Any]]:
    """One row per (seed, test item): `id` = `<seed>:<item id>`, the task, and each arm's exact match."""
    rows: dict[str, dict[str, Any]] = {}
    for (arm, seed), run in sorted(runs.items(), key=lambda kv: (kv[0][1], arm_order(kv[0][0]))):
        for item in run.items:
            key = f"{seed}:{item['id']}"
            rows.setdefault(key, {"id": key, "seed": seed, "task": item["task"]})[arm] = bool(item["correct"])
    return list(rows.values())


def event_rows(runs: Runs) -> list[dict[str, Any]]:
    """Every run's events with its arm and seed."""
    return [{"arm": arm, "seed": seed, **event} for (arm, seed), run in sorted(runs.items()) for event in run.events]


def save_history(runs: Runs, path: str | Path) -> None:
    """The raw curves (one row per run and evaluation) and the events as a `datasets.DatasetDict`, atomically."""
    curves = [{"arm": arm, "seed": seed, **row} for (arm, seed), run in sorted(runs.items()) for row in run.curve]
    events = [
        {"arm": e["arm"], "seed": e["seed"], "type": e["type"], "fields_json": json.dumps(e, default=str)}
        for e in event_rows(runs)
    ]
    splits = {"curves": Dataset.from_list(curves)}
    if events:
        splits["events"] = Dataset.from_list(events)
    with atomic_directory(path) as tmp:
        DatasetDict(splits).save_to_disk(str(tmp))


def plot_curves(params: ACOCParams, runs: Runs, path: str | Path) -> None:
    """PNG: raw (thin) and smoothed (thick) val loss against training FLOPs, every arm and seed."""
    plt = pyplot()
    colors = {"S": "tab:blue", "L": "tab:orange", "G": "tab:green", "A": "tab:red"}
    figure, axis = plt.subplots(figsize=(9, 5.5))
    for (arm, seed), run in sorted(runs.items()):
        if arm not in colors:  # A's ablations: their effects are figures, not curves
            continue
        curve = _curve(run)
        axis.plot(*zip(*curve, strict=True), color=colors[arm], alpha=0.15, linewidth=0.8)
        label = arm if seed == params.seeds[0] else None
        window = params.study.smooth_fraction * run.metrics["budget_flops"]
        axis.plot(*zip(*smooth(curve, window), strict=True), color=colors[arm], label=label)
    axis.set_xlabel("training FLOPs")
    axis.set_ylabel("val loss (answer tokens)")
    axis.set_yscale("log")
    axis.set_title("val loss vs training FLOPs (thin: raw, thick: smoothed), all seeds")
    axis.grid(alpha=0.3)
    axis.legend()
    save_figure(figure, path, dpi=110)
