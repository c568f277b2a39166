"""Shared wiring for stage scripts: validated params, one-line errors, tracking, metrics files."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cascadelab.config import Params, ParamsError, load_params
from cascadelab.io import write_json
from cascadelab.pipeline.measurements import split_measurements
from cascadelab.pipeline.paths import PATHS, Paths
from cascadelab.ranks import world_size
from cascadelab.tracking import StageRun, stage_run

# Stages that train on several processes under `launch.nproc` (each rank its rows; rank 0 writes and logs).
RANK_AWARE_STAGES = ("coarse_sft", "hybrid_rnn")


def fail(message: str, code: int = 2) -> None:
    """Print one error line and exit."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(code)


def load_or_fail(path: str = "params.yaml") -> Params:
    """Load params.yaml or exit with its one-line error."""
    try:
        return load_params(path)
    except ParamsError as error:
        fail(str(error))
        raise  # unreachable; keeps type checkers happy


@contextmanager
def stage_context(stage: str, params: Params, section: Any, script: str | None = None) -> Iterator[StageRun]:
    """Open the stage's MLflow run (logging seed + section + its own source) and time it."""
    import datasets

    datasets.disable_progress_bars()  # per-row map bars drown the stage log; the trainer keeps its own bar
    # transformers' MLflow callback would dump ~170 unprefixed config and TrainingArguments params into the
    # stage run beside the stage's own namespaced section; 0 keeps its metrics and drops those dumps.
    os.environ.setdefault("MLFLOW_MAX_LOG_PARAMS", "0")
    if world_size() > 1 and stage not in RANK_AWARE_STAGES:
        raise ValueError(
            f"{stage}: not rank-aware, run it on one process (launch.nproc applies to {', '.join(RANK_AWARE_STAGES)})"
        )
    logged = {"seed": params.seed, stage: section.model_dump(mode="json")}
    started = time.perf_counter()
    with stage_run(stage, logged, experiment=params.tracking.experiment) as run:
        if script is not None:
            run.log_artifact(script, artifact_path="source")
        yield run
        run.log_metrics({"stage_seconds": time.perf_counter() - started})


def write_stage_metrics(stage: str, figures: dict[str, Any], run: StageRun, paths: Paths = PATHS) -> tuple[Path, Path]:
    """Write the science to metrics/<stage>.json, the machine's measurements to plots/<stage>/timing.json; log both.

    `pipeline.measurements` decides which figure is which; MLflow gets every number under its own name, as
    before the split, and both files.
    """
    science, measured = split_measurements(figures)
    files = (paths.metrics_of(stage), paths.timing_of(stage))
    write_json(files[0], science)
    write_json(files[1], measured)  # written even when empty: dvc.yaml declares it for every stage
    run.log_metrics(figures)
    for path in files:
        run.log_artifact(path)
    return files


def run_stage(main: Callable[[], None]) -> None:
    """Run a stage's main, turning expected input errors into one line instead of a traceback."""
    try:
        main()
    except (ValueError, FileNotFoundError) as error:
        fail(str(error).splitlines()[0] if str(error) else type(error).__name__)
