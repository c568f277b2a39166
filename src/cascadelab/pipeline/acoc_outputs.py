"""Shapes an ACOC run into the stage's outputs: metrics, per-cycle plot tables, MLflow series, dataset, figure.

* `stage_metrics`: `{"acoc": ..., "static_initial": ..., "static_final": ..., "bars": ...}` — per-task exact
  match, perplexity, parameters, parameter-steps and forgetting of each model, and the issue's bars.
* `plot_tables`: per-cycle TSV rows for `dvc plots` (validation loss and parameters of the three models,
  experts per layer of the grown one).
* `cycle_series`: per-cycle MLflow metrics the training loop does not log itself (baselines, parameter-steps,
  structural changes), as `(metrics, cycle)` pairs.
* `history_dataset` / `save_history`: the per-cycle history of every model and the event log as a
  `datasets.DatasetDict`; nested records (saturation, vote, signals, changes) are JSON strings, so every
  split has one schema.
* `plot_cycles`: a PNG of the same curves for MLflow.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict

from cascadelab.io import atomic_directory
from cascadelab.training.acoc_trainer import ACOCResult, RunResult, bars

MODELS = ("acoc", "static_initial", "static_final")
CHANGE_KINDS = ("split", "widen", "prune", "merge")
NESTED = ("saturation", "vote", "signals", "expansions", "prunes", "merges", "thresholds")


def _runs(result: ACOCResult) -> dict[str, RunResult]:
    return {"acoc": result, **result.baselines}


def _tasks(result: ACOCResult) -> list[str]:
    return list(result.history[-1]["tasks"]) if result.history else []


def stage_metrics(result: ACOCResult) -> dict[str, Any]:
    """The metrics file: each model's final metrics and the measured bars."""
    metrics: dict[str, Any] = {name: dict(run.metrics) for name, run in _runs(result).items()}
    metrics["bars"] = bars(result)
    return metrics


def plot_tables(result: ACOCResult) -> dict[str, list[dict[str, Any]]]:
    """Rows per cycle: `loss` and `params` (one column per model), `experts` (total, per layer, changes)."""
    runs = _runs(result)
    loss, params, experts = [], [], []
    for index, row in enumerate(result.history):
        cycle = row["cycle"]
        loss.append({"cycle": cycle, **{name: _at(run.history, index, "val_loss_mean") for name, run in runs.items()}})
        params.append({"cycle": cycle, **{name: _at(run.history, index, "params") for name, run in runs.items()}})
        counts = {kind: sum(e["type"] == kind and e["cycle"] == cycle for e in result.events) for kind in CHANGE_KINDS}
        per_layer = {f"layer_{layer}": n for layer, n in enumerate(row["experts"])}
        experts.append({"cycle": cycle, "experts": sum(row["experts"]), **per_layer, **counts})
    return {"loss": loss, "params": params, "experts": experts}


def _at(history: Sequence[Mapping[str, Any]], index: int, key: str) -> Any:
    return history[index][key] if index < len(history) else None


def cycle_series(result: ACOCResult) -> list[tuple[dict[str, float], int]]:
    """Per-cycle MLflow metrics beyond the loop's own `acoc/cycle/*`: baselines, parameter-steps, changes."""
    series = []
    for index, row in enumerate(result.history):
        cycle = row["cycle"]
        metrics = {"acoc/cycle/parameter_steps": float(row["parameter_steps"])}
        for kind in CHANGE_KINDS:
            count = sum(e["type"] == kind and e["cycle"] == cycle for e in result.events)
            metrics[f"acoc/cycle/{kind}s"] = float(count)
        for name, run in result.baselines.items():
            if index < len(run.history):
                base = run.history[index]
                metrics[f"{name}/cycle/val_loss"] = float(base["val_loss_mean"])
                metrics[f"{name}/cycle/params"] = float(base["params"])
                metrics[f"{name}/cycle/parameter_steps"] = float(base["parameter_steps"])
                for task, acc in base["val_acc"].items():
                    metrics[f"{name}/cycle/val_acc_{task}"] = float(acc)
                    metrics[f"{name}/cycle/val_loss_{task}"] = float(base["val_loss"][task])
        series.append((metrics, cycle))
    return series


def history_records(history: Sequence[Mapping[str, Any]], tasks: Sequence[str]) -> list[dict[str, Any]]:
    """One flat record per cycle: scalars and lists as they are, per-task dicts as columns, nested as JSON."""
    records = []
    for row in history:
        record: dict[str, Any] = {}
        for key, value in row.items():
            if key in ("train_loss", "val_loss", "val_acc"):
                for task in tasks:
                    record[f"{key}_{task}"] = None if value.get(task) is None else float(value[task])
            elif key in NESTED:
                record[f"{key}_json"] = json.dumps(value, sort_keys=True)
            else:
                record[key] = value
        records.append(record)
    return records


def event_records(events: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The event log with one schema: type, cycle, step and the event's other fields as JSON."""
    return [
        {
            "type": e["type"],
            "cycle": int(e["cycle"]),
            "step": int(e["step"]),
            "fields_json": json.dumps({k: v for k, v in e.items() if k not in ("type", "cycle", "step")}, default=str),
        }
        for e in events
    ]


def history_dataset(result: ACOCResult) -> DatasetDict:
    """Per-cycle history of ACOC and each baseline, and the events, as splits of one DatasetDict."""
    tasks = _tasks(result)
    splits = {name: Dataset.from_list(history_records(run.history, tasks)) for name, run in _runs(result).items()}
    splits["events"] = Dataset.from_list(event_records(result.events))
    return DatasetDict(splits)


def save_history(result: ACOCResult, path: str | Path) -> None:
    """Write `history_dataset(result)` with `save_to_disk`, atomically (`load_from_disk` reads it back)."""
    with atomic_directory(path) as tmp:
        history_dataset(result).save_to_disk(str(tmp))


def plot_cycles(result: ACOCResult, path: str | Path) -> None:
    """PNG: parameters, validation loss, experts per layer and per-task validation accuracy across cycles."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = _runs(result)
    figure, axes = plt.subplots(2, 2, figsize=(10, 7))
    for name, run in runs.items():
        cycles = [row["cycle"] for row in run.history]
        axes[0, 0].plot(cycles, [row["params"] for row in run.history], marker="o", label=name)
        axes[0, 1].plot(cycles, [row["val_loss_mean"] for row in run.history], marker="o", label=name)
        for task in _tasks(result):
            points = [(row["cycle"], row["val_acc"][task]) for row in run.history if task in row["val_acc"]]
            axes[1, 1].plot(*zip(*points, strict=True), marker=".", label=f"{name} {task}")
    cycles = [row["cycle"] for row in result.history]
    for layer in range(len(result.history[0]["experts"]) if result.history else 0):
        axes[1, 0].step(cycles, [row["experts"][layer] for row in result.history], where="post", label=f"layer {layer}")
    for event in result.events:
        if event["type"] in ("split", "widen"):
            axes[0, 1].axvline(event["cycle"], color="grey", alpha=0.2)
    titles = [
        ("parameters", "parameters (end of cycle)"),
        ("validation loss", "mean val loss"),
        ("ACOC experts per layer", "experts"),
        ("validation accuracy per task", "sequence accuracy"),
    ]
    for axis, (title, ylabel) in zip(axes.flat, titles, strict=True):
        axis.set_title(title)
        axis.set_xlabel("cycle")
        axis.set_ylabel(ylabel)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    figure.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(str(path), dpi=110)
    plt.close(figure)
