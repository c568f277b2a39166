"""Shared wiring for stage scripts: validated params, one-line errors, tracking, metrics files."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from cascadelab.config import Params, ParamsError, load_params
from cascadelab.io import write_json
from cascadelab.pipeline.headline import split_headline
from cascadelab.pipeline.measurements import split_measurements
from cascadelab.pipeline.paths import PATHS, Paths
from cascadelab.ranks import relaunch_under_torchrun, world_size
from cascadelab.tracking import StageRun, stage_run

_stage_started: ContextVar[float | None] = ContextVar("cascadelab_stage_started", default=None)

# Stages that train on several processes under `launch.nproc` (each rank its rows; rank 0 writes and logs).
RANK_AWARE_STAGES = ("coarse_sft", "hybrid_rnn", "sigma_pretrain")
# Training stages whose training is not written for data parallelism: `launch.nproc` > 1 stops them, and why.
SINGLE_PROCESS_STAGES = {
    "limen": "it fits a small gate on the coarse model's features in one pass",
    "refiner": "it trains several TRL models per run, in processes of its own with refiner.parallel",
    "lego_phase1": "its early stopping and model saving are not written for data parallelism",
    "lego_phase2": "its upper-block and baseline runs are not written for data parallelism",
    "acoc": "it grows and prunes its model between cycles, which ranks would have to agree on",
    "sigma_rl": "its GRPO loop samples and scores rollouts on one process",
}


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


def launch(stage: str, nproc: int, script: str) -> None:
    """Run the stage on `nproc` processes (a torchrun relaunch of `script`) where it can; one line where not.

    Inside a launch this checks the stage can run there and ties the process to its launcher.
    """
    if world_size() > 1 and stage not in RANK_AWARE_STAGES:
        raise ValueError(
            f"{stage}: not rank-aware, run it on one process (launch.nproc applies to {', '.join(RANK_AWARE_STAGES)})"
        )
    if nproc > 1 and stage in SINGLE_PROCESS_STAGES:
        raise ValueError(f"{stage}: runs on one process only, {SINGLE_PROCESS_STAGES[stage]}; set launch.nproc: 1")
    relaunch_under_torchrun(nproc if stage in RANK_AWARE_STAGES else 1, script)


@contextmanager
def stage_context(stage: str, params: Params, section: Any, script: str | None = None) -> Iterator[StageRun]:
    """Launch the stage as `launch.nproc` asks, open its MLflow run (seed + section + its own source), time it."""
    launch(stage, params.launch.nproc, script or sys.argv[0])
    import datasets

    datasets.disable_progress_bars()  # per-row map bars drown the stage log; the trainer keeps its own bar
    # transformers' MLflow callback would dump ~170 unprefixed config and TrainingArguments params into the
    # stage run beside the stage's own namespaced section; 0 keeps its metrics and drops those dumps.
    os.environ.setdefault("MLFLOW_MAX_LOG_PARAMS", "0")
    logged = {"seed": params.seed, stage: section.model_dump(mode="json")}
    if params.training_seed is not None:  # a seed run (`make claims`); the default run logs as it always did
        logged["training_seed"] = params.training_seed
    started = time.perf_counter()
    token = _stage_started.set(started)
    try:
        with stage_run(stage, logged, experiment=params.tracking.experiment) as run:
            if script is not None:
                run.log_artifact(script, artifact_path="source")
            yield run
            run.log_metrics({"stage_seconds": time.perf_counter() - started})
    finally:
        _stage_started.reset(token)


def write_stage_metrics(
    stage: str, figures: dict[str, Any], run: StageRun, paths: Paths = PATHS
) -> tuple[Path, Path, Path]:
    """Write the headline science to metrics/<stage>.json, the rest to plots/<stage>/{details,timing}.json; log all.

    `pipeline.measurements` parts the machine's measurements (timing) from the science, `pipeline.headline`
    the few headline figures (metrics) from the details; MLflow gets every number under its own name, as
    before the split, and the three files. Inside `stage_context`, timing also gets `stage_seconds`, the
    stage's wall time up to this call.
    """
    science, measured = split_measurements(figures)
    started = _stage_started.get()
    if started is not None:  # the stage's wall time so far, unless it measured its own
        measured.setdefault("stage_seconds", time.perf_counter() - started)
    headline, details = split_headline(stage, science)
    files = paths.figures_of(stage)
    # each written even when empty: dvc.yaml declares all three for every stage
    for path, part in zip(files, (headline, details, measured), strict=True):
        write_json(path, part)
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
