"""Measurements of the machine stay out of the metrics DVC hashes: the rule, the split and the files a stage writes."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from cascadelab.pipeline import runtime
from cascadelab.pipeline.measurements import is_measurement, split_measurements
from cascadelab.pipeline.paths import PATHS, STAGES, Paths
from cascadelab.pipeline.runtime import write_stage_metrics
from cascadelab.tracking import flatten

PHASES = [f"phase_{p}_s" for p in ("backward", "checkpoint", "data", "eval", "forward", "optimizer", "rl", "verify")]
# Every measurement in the metrics files committed before the split, classified by hand, per stage. Once a
# `dvc repro` has regenerated the files these keys live in plots/<stage>/timing.json and the metrics lack them.
AUDITED: dict[str, set[str]] = {
    "acoc": {"run_cpu_seconds", "run_seconds", "train_cpu_seconds", "train_seconds"},
    "cascade_eval": {
        *(f"latency_{kind}_{mode}" for kind in ("ms_per_item", "ratio") for mode in ("cascade", "coarse", "refined")),
        "latency_ms_per_item_skip_coarse",
        "latency_ratio_skip_coarse",
        "peak_memory_mb",
    },
    "cascade_pairs": {"pairs_seconds"},
    "coarse_sft": {"eval_sequences_per_s", "resumed_from_step", "train_seconds", "train_tokens_per_s"},
    "hybrid_rnn": {f"{p}eval_{k}" for p in ("", "beam_", "sample_") for k in ("seconds", "tokens_per_s")}
    | {"train_seconds", "train_tokens_per_s"},
    "lego_hard_examples": {"seconds"},
    "lego_phase1": {"train_seconds", "train_tokens_per_s"},
    "lego_phase2": {"baseline_train_seconds", "baseline_train_tokens_per_s", "train_seconds", "train_tokens_per_s"},
    "limen": set(),
    "prepare": set(),
    "refiner": {
        "control_train_seconds",
        "stage_seconds",
        "train_seconds",
        "train_seconds_mul",
        "train_seconds_word",
        "training_wall_seconds",
    },
    "report": set(),
    "sigma_pretrain": {
        f"{model}_{key}"
        for model in ("sigma", "baseline")
        for key in ("eval_seconds", "eval_sequences_per_s", "train_seconds", "train_tokens_per_s", *PHASES)
    }
    | {"pretrain_seconds", "step_time_ratio"},
    "sigma_rl": {"draft_speedup", "train_seconds", "wall_seconds", *PHASES},
}
# Any name that reads like a clock, a rate or memory must be a measurement, unless listed here as science.
CLOCK_LIKE = re.compile(r"second|time|latency|speed|memory|wall|elapsed|duration|per_s$|_ms|throughput|resum")
SCIENCE_LOOKALIKES: set[str] = set()
# Figures stages write only under some params (absent from the committed files): the rule must still place them.
CONDITIONAL_MEASUREMENTS = (
    "nas_seconds",  # sigma_rl with fractal_nas
    "rl_seconds",  # refiner with a self-improvement strategy
    "answer_train_seconds",  # refiner with answer_baseline
    "answer_latency_ms_per_item_cascade",  # cascade_eval's baselines, prefixed with their name
    "answer_latency_ratio_cascade",
)
COUNTED_SCIENCE = (
    "train_tokens",
    "tokens_per_item_cascade",
    "tokens_ratio_cascade",
    "draft_tokens_per_forward",
    "draft_acceptance_rate",
    "compute_cost",
    "collection_flops",
    "lego_train_flops",
    "parameter_steps",
    "parameter_steps_ratio_vs_final",
    "ppl_ratio",
    "bytes",
    "refiner_bytes",
    "answer_train_tokens",
    "nas_trials",
    "threshold_mul",
    "sigma_feature_moe_effective_calls",
    "sandbox_isolation",
    "em_sub2",
    "curriculum_switch_step",
    "hidden_eval_prompts_checked",
)


def _committed(folder: str, pattern: str) -> list[Path]:
    # the claims tables (report's outs) sit beside the stages' metrics but are no stage's metrics file
    return sorted(path for path in Path(folder).glob(pattern) if path not in (PATHS.claims, PATHS.claims_seeds))


def test_the_audit_covers_every_stage_and_every_committed_metrics_file() -> None:
    assert set(AUDITED) == set(STAGES)
    assert {path.stem for path in _committed("metrics", "*.json")} <= set(AUDITED)


@pytest.mark.parametrize("path", _committed("metrics", "*.json"), ids=lambda p: p.stem)
def test_the_rule_sends_every_measurement_of_a_committed_metrics_file_out_of_the_metrics(path: Path) -> None:
    keys = flatten(json.loads(path.read_text(encoding="utf-8")))
    science, measured = split_measurements(json.loads(path.read_text(encoding="utf-8")))
    for key in keys:
        leaf = key.rsplit(".", 1)[-1]
        assert is_measurement(key) == (leaf in AUDITED[path.stem]), key
        assert not CLOCK_LIKE.search(leaf) or is_measurement(key) or leaf in SCIENCE_LOOKALIKES, key
    assert not any(is_measurement(key) for key in flatten(science))
    assert set(flatten(science)) | set(flatten(measured)) == set(keys)


def test_the_committed_details_files_hold_no_measurement() -> None:
    for path in _committed("plots", "*/details.json"):
        assert not any(is_measurement(key) for key in flatten(json.loads(path.read_text(encoding="utf-8")))), path


def test_the_committed_timing_files_hold_only_measurements() -> None:
    for path in _committed("plots", "*/timing.json"):  # none until a `dvc repro` after the split writes them
        assert all(is_measurement(key) for key in flatten(json.loads(path.read_text(encoding="utf-8")))), path


@pytest.mark.parametrize("key", CONDITIONAL_MEASUREMENTS)
def test_figures_written_only_under_some_params_are_measurements_too(key: str) -> None:
    assert is_measurement(key)


@pytest.mark.parametrize("key", COUNTED_SCIENCE)
def test_counted_compute_and_ratios_of_counts_stay_science(key: str) -> None:
    assert not is_measurement(key)


def test_the_split_keeps_nesting_and_drops_groups_left_empty() -> None:
    figures = {
        "acoc": {"em": 59.0, "train_seconds": 55.0, "parameter_steps": 1.0},
        "clock": {"run_seconds": 1.0},
        "bars": {},
        "em": 22.9,
        "draft_speedup": 1.1,
    }
    science, measured = split_measurements(figures)
    assert science == {"acoc": {"em": 59.0, "parameter_steps": 1.0}, "bars": {}, "em": 22.9}
    assert measured == {"acoc": {"train_seconds": 55.0}, "clock": {"run_seconds": 1.0}, "draft_speedup": 1.1}


class _Recorder:
    """A stage run that keeps what it was given."""

    def __init__(self) -> None:
        self.metrics: dict[str, Any] = {}
        self.artifacts: list[Path] = []

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        self.metrics.update(flatten(metrics))

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        self.artifacts.append(Path(path))


def test_a_stage_writes_headline_to_metrics_details_and_measurements_apart_and_logs_every_figure(
    tmp_path: Path,
) -> None:
    paths = Paths.under(tmp_path)
    figures = {
        "em": 22.9,
        "em_add": 100.0,
        "train_tokens": 1613824,
        "train_seconds": 277.8,
        "train_tokens_per_s": 5809.4,
        "resumed_from_step": 0,
        "static_final": {"em": 87.0, "run_cpu_seconds": 43.6},
    }
    run = _Recorder()
    files = write_stage_metrics("coarse_sft", figures, run, paths)  # type: ignore[arg-type]
    plots = tmp_path / "plots" / "coarse_sft"
    assert files == (tmp_path / "metrics" / "coarse_sft.json", plots / "details.json", plots / "timing.json")
    assert json.loads(files[0].read_text()) == {"em": 22.9}
    assert json.loads(files[1].read_text()) == {"em_add": 100.0, "train_tokens": 1613824, "static_final": {"em": 87.0}}
    assert json.loads(files[2].read_text()) == {
        "train_seconds": 277.8,
        "train_tokens_per_s": 5809.4,
        "resumed_from_step": 0,
        "static_final": {"run_cpu_seconds": 43.6},
    }
    assert run.metrics == flatten(figures)  # MLflow names unchanged by the splits
    assert run.artifacts == list(files)


def test_a_stage_that_measures_nothing_still_writes_its_declared_details_and_timing_files(tmp_path: Path) -> None:
    paths = Paths.under(tmp_path)
    write_stage_metrics("limen", {"val_auroc": 0.95}, _Recorder(), paths)  # type: ignore[arg-type]
    assert json.loads(paths.details_of("limen").read_text()) == {}
    assert json.loads(paths.timing_of("limen").read_text()) == {}
    assert PATHS.timing_of("limen") == Path("plots/limen/timing.json")


def test_inside_a_stage_timing_gets_its_wall_time_unless_the_stage_measured_its_own(tmp_path: Path) -> None:
    paths = Paths.under(tmp_path)
    token = runtime._stage_started.set(time.perf_counter() - 5.0)  # a stage that started five seconds ago
    try:
        write_stage_metrics("limen", {"val_auroc": 0.95}, _Recorder(), paths)  # type: ignore[arg-type]
        write_stage_metrics("refiner", {"stage_seconds": 1.5}, _Recorder(), paths)  # type: ignore[arg-type]
    finally:
        runtime._stage_started.reset(token)
    assert json.loads(paths.timing_of("limen").read_text())["stage_seconds"] >= 5.0
    assert json.loads(paths.timing_of("refiner").read_text()) == {"stage_seconds": 1.5}
