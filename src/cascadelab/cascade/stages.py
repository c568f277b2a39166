"""The cascade stages' logic on files: `cascade_pairs → limen → refiner → cascade_eval`.

Every stage reads the frozen coarse model saved by `coarse_sft` (`models/coarse`, its tokenizer beside it)
and the corpus of `prepare`; the stage scripts only pass paths and settings and write what comes back.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import PreTrainedModel

from cascadelab.cascade.cascade import CascadeTransformer
from cascadelab.cascade.evaluation import plot_accuracy_vs_compute, run_cascade_eval
from cascadelab.cascade.limen import Limen, run_limen
from cascadelab.cascade.pairs import TrainFoldFn, run_cascade_pairs
from cascadelab.cascade.refiner import Refiner
from cascadelab.cascade.stage_io import PAIR_SPLITS, load_inputs, load_model, read_pairs, write_pairs
from cascadelab.config import CascadeEvalSettings, LimenSettings, PairsSettings, RefinerSettings
from cascadelab.io import atomic_directory, write_json
from cascadelab.training.refiner_trainer import run_refiner

Record = dict[str, Any]
DISABLED = "disabled.json"  # what a disabled optional model's folder holds (DVC outs must exist)


@dataclass
class StageOutcome:
    """A cascade stage's metrics, its curves (name → rows, one TSV each) and a prediction sample.

    Undefined rates (e.g. a break rate over no coarse-right items) are dropped from `metrics`, so the
    metrics file stays strict JSON; the curves keep them as empty cells.
    """

    metrics: dict[str, Any]
    curves: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    predictions: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.metrics = {k: v for k, v in self.metrics.items() if not (isinstance(v, float) and math.isnan(v))}


# ---------------------------------------------------------------------------------------------- cascade_pairs
def run_pairs_stage(
    settings: PairsSettings,
    seed: int,
    corpus_dir: Path,
    coarse_dir: Path,
    pairs_dir: Path,
    train_fold_fn: TrainFoldFn | None = None,
) -> StageOutcome:
    """The coarse model answers train and val prompts; pairs go to `pairs_dir/{train,val}.jsonl`."""
    inputs = load_inputs(corpus_dir, coarse_dir, settings.num_threads)
    splits = {name: inputs.split(name) for name in PAIR_SPLITS}
    outcome = run_cascade_pairs(inputs.coarse, inputs.tokenizer, splits, inputs.verifier, settings, seed, train_fold_fn)
    write_pairs(pairs_dir, outcome.pairs)
    return StageOutcome(dict(outcome.metrics), {"error_rates": error_rate_rows(outcome.metrics)})


def error_rate_rows(metrics: dict[str, float]) -> list[dict[str, Any]]:
    """Per task: the coarse model's greedy and sampled error rates (%) on train and val prompts."""
    tasks = sorted({k.rsplit("_", 1)[1] for k in metrics if k.startswith("train_coarse_error_")})
    return [
        {
            "task": task,
            **{
                f"{split}_{name}": metrics.get(f"{split}_coarse_{name}_{task}", float("nan"))
                for split in PAIR_SPLITS
                for name in ("error", "sample_error")
            },
        }
        for task in tasks
    ]


# ---------------------------------------------------------------------------------------------- limen
def run_limen_stage(
    settings: LimenSettings, corpus_dir: Path, coarse_dir: Path, pairs_dir: Path, limen_dir: Path
) -> StageOutcome:
    """Fit LIMEN on the train pairs, calibrate it and choose its threshold on val; save it to `limen_dir`."""
    inputs = load_inputs(corpus_dir, coarse_dir, settings.num_threads)
    train, val = (read_pairs(pairs_dir, split) for split in PAIR_SPLITS)
    outcome = run_limen(inputs.coarse, inputs.tokenizer, inputs.verifier, train, val, settings, limen_dir)
    greedy = [p for p in val if p.get("source", "greedy") == "greedy"] or val
    intentions = outcome.limen.create_intentions(
        [p["prompt"] for p in greedy], [p["coarse"] for p in greedy], "coarse", [p["task"] for p in greedy]
    )
    tension = outcome.limen.tensions(intentions).tolist()
    wrong = [not p["coarse_correct"] for p in greedy]
    curves = {"reliability": reliability_rows(tension, wrong, settings.ece_bins)}
    return StageOutcome(dict(outcome.metrics), curves)


def reliability_rows(tension: Sequence[float], wrong: Sequence[bool], bins: int) -> list[dict[str, float]]:
    """Reliability diagram: per tension bin, the mean predicted P(wrong), the observed wrong rate, the count."""
    rows = []
    for b in range(bins):
        low, high = b / bins, (b + 1) / bins
        inside = [i for i, t in enumerate(tension) if low <= t < high or (b == bins - 1 and t == 1.0)]
        if inside:
            rows.append(
                {
                    "predicted": sum(tension[i] for i in inside) / len(inside),
                    "observed": sum(wrong[i] for i in inside) / len(inside),
                    "count": float(len(inside)),
                }
            )
    return rows


# ---------------------------------------------------------------------------------------------- refiner
def run_refiner_stage(
    settings: RefinerSettings,
    seed: int,
    corpus_dir: Path,
    coarse_dir: Path,
    pairs_dir: Path,
    limen_dir: Path,
    refiner_dir: Path,
    control_dir: Path,
    baseline_dir: Path,
    report_to: Sequence[str] = (),
) -> StageOutcome:
    """Train the refiner, the equal-compute control `coarse_more` and, if asked, the answer-target baseline;
    save them (a marker file for a disabled one) and report val exact match."""
    inputs = load_inputs(corpus_dir, coarse_dir, settings.train.num_threads)
    train, val, test = (inputs.split(name) for name in ("train", "val", "test"))
    limen = None
    if settings.strategy != "teacher_forcing" and settings.self_improvement.tension_weight:
        limen = Limen.load(limen_dir, inputs.coarse, inputs.tokenizer, inputs.verifier)
    work_dir = Path(tempfile.mkdtemp(prefix="refiner-"))
    try:
        outcome = run_refiner(
            inputs.coarse,
            inputs.tokenizer,
            inputs.verifier,
            settings,
            seed,
            work_dir,
            read_pairs(pairs_dir, "train"),
            train,
            [*val, *test],
            str(inputs.meta.get("answer_format", "reversed")),
            limen,
            val_records=val,
            report_to=report_to,
        )
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    outcome.refiner.save(refiner_dir)
    save_control(outcome.control, inputs.tokenizer, control_dir)
    if outcome.answer_baseline is not None:
        outcome.answer_baseline.save(baseline_dir)
    else:
        with atomic_directory(baseline_dir) as tmp:
            write_json(tmp / DISABLED, {"enabled": False})
    curves = {"train": outcome.history, "control_train": outcome.control_history}
    return StageOutcome(dict(outcome.metrics), curves)


def save_control(model: PreTrainedModel | None, tokenizer: Any, folder: Path) -> None:
    """Write `coarse_more` like the coarse model (`save_pretrained` + tokenizer), or a marker when disabled."""
    with atomic_directory(folder) as tmp:
        if model is None:
            write_json(tmp / DISABLED, {"enabled": False})
            return
        model.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))


def load_control(folder: Path) -> PreTrainedModel | None:
    """The saved control, or None when the refiner stage ran with `control.enabled: false`."""
    return None if (folder / DISABLED).is_file() else load_model(folder)


# ---------------------------------------------------------------------------------------------- cascade_eval
def run_cascade_eval_stage(
    settings: CascadeEvalSettings,
    corpus_dir: Path,
    coarse_dir: Path,
    limen_dir: Path,
    refiner_dir: Path,
    control_dir: Path,
    baseline_dir: Path,
    plot_path: Path,
) -> StageOutcome:
    """Every mode on test (gate threshold re-chosen on val), the control, the answer-target baseline when it
    was trained, the sweep curves and their PNG."""
    inputs = load_inputs(corpus_dir, coarse_dir, settings.num_threads)
    refiner = Refiner.load(refiner_dir, inputs.tokenizer, base_model=inputs.coarse)
    coarse = None if refiner.settings.mode == "lora" else inputs.coarse
    limen = Limen.load(limen_dir, inputs.coarse, inputs.tokenizer, inputs.verifier)
    cascade = CascadeTransformer(coarse, refiner, limen, inputs.tokenizer, settings.cascade)
    baselines = {}
    if not (baseline_dir / DISABLED).is_file():
        answer = Refiner.load(baseline_dir, inputs.tokenizer, base_model=inputs.coarse)
        baselines["answer"] = CascadeTransformer(coarse, answer, limen, inputs.tokenizer, settings.cascade)
    val, test = inputs.split("val"), inputs.split("test")
    outcome = run_cascade_eval(
        cascade, val, test, inputs.verifier.verify, settings, load_control(control_dir), baselines
    )
    plot_accuracy_vs_compute(outcome.curves, plot_path, operating_points(outcome.metrics))
    curves = {"sweep": sweep_rows(outcome.curves), "families": family_rows(outcome.metrics, test)}
    return StageOutcome(dict(outcome.metrics), curves, outcome.predictions)


def operating_points(metrics: dict[str, float]) -> dict[str, tuple[float, float]]:
    """The gated cascade at its chosen threshold, as (tokens per item, EM) for the accuracy-vs-compute plot."""
    if "tokens_per_item_cascade" not in metrics or "em_cascade" not in metrics:
        return {}
    label = f"gated cascade (threshold {metrics.get('threshold', float('nan')):.2f})"
    return {label: (metrics["tokens_per_item_cascade"], metrics["em_cascade"])}


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
