"""The `cascade_eval` stage's logic: the cascade's modes on test, the equal-compute control, the sweep curves."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from cascadelab.cascade.cascade import CascadeTransformer
from cascadelab.cascade.evaluation import plot_accuracy_vs_compute, run_cascade_eval
from cascadelab.cascade.limen import Limen
from cascadelab.cascade.refiner import Refiner
from cascadelab.config import CascadeEvalSettings
from cascadelab.data.held_out import final_evaluation
from cascadelab.pipeline.cascade_io import DISABLED, Record, StageOutcome, load_control, load_inputs
from cascadelab.pipeline.paths import Paths


def run(settings: CascadeEvalSettings, seed: int, paths: Paths) -> StageOutcome:
    """Every mode on test (gate threshold re-chosen on val), the control, the answer-target baseline when it
    was trained, the sweep curves and their PNG (`plots/cascade_eval/accuracy_vs_compute.png`).

    `seed` is unused: decoding is greedy.
    """
    inputs = load_inputs(paths.corpus, paths.coarse, settings.num_threads)
    refiner = Refiner.load(paths.refiner, inputs.tokenizer, base_model=inputs.coarse)
    coarse = None if refiner.settings.mode == "lora" else inputs.coarse
    limen = Limen.load(paths.limen, inputs.coarse, inputs.tokenizer, inputs.verifier)
    cascade = CascadeTransformer(coarse, refiner, limen, inputs.tokenizer, settings.cascade)
    baselines = {}
    if not (paths.refiner_answer / DISABLED).is_file():
        answer = Refiner.load(paths.refiner_answer, inputs.tokenizer, base_model=inputs.coarse)
        baselines["answer"] = CascadeTransformer(coarse, answer, limen, inputs.tokenizer, settings.cascade)
    nodraft = None
    if not (paths.refiner_nodraft / DISABLED).is_file():
        ablation = Refiner.load(paths.refiner_nodraft, inputs.tokenizer, base_model=inputs.coarse)
        nodraft = CascadeTransformer(coarse, ablation, limen, inputs.tokenizer, settings.cascade)
        # the same gate over the no-draft refiner: its own threshold chosen on val, its own sweep curve
        baselines["nodraft"] = CascadeTransformer(coarse, ablation, limen, inputs.tokenizer, settings.cascade)
    val = inputs.split("val")
    with final_evaluation("cascade_eval"):
        test = inputs.split("test")
        outcome = run_cascade_eval(
            cascade, val, test, inputs.verifier.verify, settings, load_control(paths.coarse_more), baselines, nodraft
        )
    plot_path = paths.plots_of("cascade_eval") / "accuracy_vs_compute.png"
    plot_accuracy_vs_compute(outcome.curves, plot_path, operating_points(outcome.metrics))
    curves = {"sweep": sweep_rows(outcome.curves), "families": family_rows(outcome.metrics, test)}
    return StageOutcome(dict(outcome.metrics), curves, outcome.predictions, outcome.items)


POINTS: tuple[tuple[str, str], ...] = (
    ("coarse_only", "coarse"),
    ("always_refine", "refined"),
    ("skip_coarse (no-draft refiner)", "skip_coarse"),
    ("coarse_more (control)", "control"),
    ("oracle gate", "oracle"),
)


def operating_points(metrics: dict[str, float]) -> dict[str, tuple[float, float]]:
    """Every baseline and the gated cascade at its chosen threshold, as (FLOPs per item, EM) for the plot."""
    points = {}
    threshold = metrics.get("threshold", float("nan"))
    for label, key in (*POINTS, (f"gated cascade (threshold {threshold:.2f})", "cascade")):
        if f"flops_per_item_{key}" in metrics and f"em_{key}" in metrics:
            points[label] = (metrics[f"flops_per_item_{key}"], metrics[f"em_{key}"])
    if "nodraft_flops_per_item_cascade" in metrics and "nodraft_em_cascade" in metrics:
        label = f"gated, no-draft refiner (threshold {metrics.get('nodraft_threshold', float('nan')):.2f})"
        points[label] = (metrics["nodraft_flops_per_item_cascade"], metrics["nodraft_em_cascade"])
    return points


def sweep_rows(curves: dict[str, list[dict[str, float]]]) -> list[dict[str, Any]]:
    """Every sweep curve in one table (a `curve` column names it), points in compute order."""
    return [{"curve": name, **point} for name, points in curves.items() for point in points]


FAMILY_COLUMNS: tuple[tuple[str, str], ...] = (
    ("coarse", "em_coarse"),
    ("refined", "em_refined"),
    ("cascade", "em_cascade"),
    ("control", "em_control"),
    ("fix_rate", "fix_rate_cascade"),
    ("break_rate", "break_rate_cascade"),
    ("fix_rate_always", "fix_rate_refined"),
    ("break_rate_always", "break_rate_refined"),
    ("cascade_minus_control", "cascade_minus_control"),
)


def family_rows(metrics: dict[str, float], records: Sequence[Record]) -> list[dict[str, Any]]:
    """Per task family (and `all`): exact match of each mode and the control, fix and break rates."""
    counts: dict[str, int] = defaultdict(int)
    for record in records:
        counts[record["task"]] += 1
    rows = []
    for task in [*sorted(counts), "all"]:
        suffix = "" if task == "all" else f"_{task}"
        row: dict[str, Any] = {"task": task, "items": counts[task] if task != "all" else len(records)}
        for column, key in FAMILY_COLUMNS:
            row[column] = metrics.get(f"{key}{suffix}", float("nan"))
        rows.append(row)
    return rows
