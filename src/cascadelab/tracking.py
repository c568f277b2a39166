"""The one way stages log to MLflow.

* The store is anchored at the repository root: `DVC_ROOT` when DVC runs the stage (it points at the
  original repository even under `dvc exp run --temp/--queue`, whose working directory is a temporary
  copy), else the nearest folder above the working directory holding `.dvc/`. Default store:
  ``sqlite:///<root>/mlflow.db`` with artifacts under ``<root>/mlruns``; `MLFLOW_TRACKING_URI` overrides.
* The schema is created under a file lock, so several queued experiments can start at once.
* Each stage execution is one run, tagged with the stage, DVC experiment name and baseline, git commit
  and a hash of the stage's params; the stage runs of one pipeline execution share a parent run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
from filelock import FileLock
from mlflow.tracking import MlflowClient

from cascadelab.ranks import is_main_process, world_size

TAG_STAGE = "cascadelab.stage"
TAG_PARAMS_HASH = "cascadelab.params_hash"
TAG_PIPELINE_KEY = "cascadelab.pipeline_key"
TAG_ROLE = "cascadelab.role"
TAG_SOURCE = "cascadelab.source"
TAG_EXP_NAME = "dvc.exp_name"
TAG_BASELINE = "dvc.exp_baseline_rev"
TAG_GIT_COMMIT = "mlflow.source.git.commit"
TAG_PARENT = "mlflow.parentRunId"
TAG_CACHED = "cascadelab.cached"
TAG_PROCESSES = "cascadelab.processes"  # ranks that trained the stage (launch.nproc)
# MLflow's UI opens an experiment of this kind on its runs (model training) view, not the GenAI traces view.
TAG_EXPERIMENT_KIND = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
PIPELINE_ID_ENV = "CASCADELAB_PIPELINE_ID"


def repo_root(start: str | Path | None = None) -> Path:
    """The repository root that anchors the store: `DVC_ROOT`, else the nearest parent holding `.dvc/`."""
    dvc_root = os.environ.get("DVC_ROOT")
    if dvc_root:
        return Path(dvc_root).resolve()
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / ".dvc").is_dir():
            return folder
    return here


def tracking_uri(root: Path | None = None) -> str:
    """`MLFLOW_TRACKING_URI` if set, else a SQLite store at the repository root."""
    explicit = os.environ.get("MLFLOW_TRACKING_URI")
    if explicit:
        return explicit
    return default_uri(root or repo_root())


def default_uri(root: Path) -> str:
    """The SQLite store that lives at a repository root (what `tracking_uri` gives without the variable)."""
    return f"sqlite:///{root / 'mlflow.db'}"


def relocate_copied_store(root: Path, location: str) -> bool:
    """Point a copied checkout's store at its own `mlruns/`; True if it had to.

    MLflow records artifact locations as absolute paths, so a checkout copied with its `mlflow.db` and
    `mlruns/` would keep writing artifacts into the original's folder. When the experiment's location is a
    local `mlruns` folder other than this root's, every experiment and run path under the old folder is
    rewritten to the same path under this one (MLflow has no API for it; the two columns are plain text).
    """
    here = artifact_location(root)
    if not location.startswith("file:") or location == here or not location.endswith("/mlruns"):
        return False
    with contextlib.closing(sqlite3.connect(root / "mlflow.db")) as db, db:
        for table, column in (("experiments", "artifact_location"), ("runs", "artifact_uri")):
            db.execute(  # the old folder itself or a path inside it, never a sibling such as mlruns2/
                f"UPDATE {table} SET {column} = :new || substr({column}, :cut) "
                f"WHERE {column} = :old OR substr({column}, 1, :cut) = :old || '/'",
                {"new": here, "old": location, "cut": len(location) + 1},
            )
    print(f"mlflow.db was copied from {location}: its artifact paths now point at {here}", file=sys.stderr)
    return True


def artifact_location(root: Path | None = None) -> str:
    """Absolute artifact location for new experiments, so artifacts outlive temporary workspaces."""
    return ((root or repo_root()) / "mlruns").as_uri()


def params_hash(section: Mapping[str, Any]) -> str:
    """Short stable hash of a params mapping (sorted-key JSON)."""
    canonical = json.dumps(section, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested mappings into dotted keys (`a.b.c`)."""
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{dotted}."))
        else:
            flat[dotted] = value
    return flat


def git_commit(cwd: Path | None = None) -> str | None:
    """The checked-out commit of the working directory's repository, if any."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def pipeline_key() -> str | None:
    """Identify the pipeline execution this stage belongs to, or None for a stand-alone run.

    In order: `CASCADELAB_PIPELINE_ID` (set by the caller), the DVC experiment name (one experiment is
    one pipeline execution), else the `dvc` process that spawned this stage (pid + start time).
    """
    explicit = os.environ.get(PIPELINE_ID_ENV)
    if explicit:
        return f"id:{explicit}"
    exp_name = os.environ.get("DVC_EXP_NAME")
    if exp_name:
        return f"exp:{exp_name}:{os.environ.get('DVC_EXP_BASELINE_REV', '')}"
    return _dvc_ancestor_key()


def _dvc_ancestor_key() -> str | None:
    try:
        import psutil
    except ImportError:  # pragma: no cover - psutil comes with accelerate
        return None
    try:
        process = psutil.Process().parent()
        while process is not None:
            cmdline = process.cmdline()
            if any(Path(part).name == "dvc" or part.endswith("/dvc") for part in cmdline[:2]) or (
                len(cmdline) > 2 and cmdline[1:3] == ["-m", "dvc"]
            ):
                return f"dvc:{process.pid}:{process.create_time():.0f}"
            process = process.parent()
    except (psutil.Error, OSError):
        return None
    return None


@dataclass
class StageRun:
    """Handle on the active MLflow run of one stage execution."""

    run_id: str
    experiment_id: str
    client: MlflowClient

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log (flattened) params; values longer than MLflow's limit are truncated."""
        flat = {key: str(value)[:6000] for key, value in flatten(params).items()}
        items = list(flat.items())
        for start in range(0, len(items), 100):
            mlflow.log_params(dict(items[start : start + 100]))

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Log numeric metrics (non-numbers are skipped), optionally at a step."""
        clean = {key: float(value) for key, value in flatten(metrics).items() if _is_number(value)}
        if clean:
            mlflow.log_metrics(clean, step=step)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Log a file or folder as an artifact of this run."""
        path = Path(path)
        if path.is_dir():
            mlflow.log_artifacts(str(path), artifact_path=artifact_path)
        elif path.is_file():
            mlflow.log_artifact(str(path), artifact_path=artifact_path)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set tags on this run."""
        mlflow.set_tags({key: str(value) for key, value in tags.items()})


class SilentStageRun(StageRun):
    """The stage run of a process other than rank 0 in a multi-process launch: rank 0 logs, this one does not."""

    def __init__(self) -> None:
        super().__init__(run_id="", experiment_id="", client=None)  # type: ignore[arg-type]  # never used

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log nothing."""

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Log nothing."""

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Log nothing."""

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set nothing."""


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value == value


def init_store(experiment: str, root: Path | None = None) -> str:
    """Point MLflow at the store, create schema and experiment once (under a file lock); return its id."""
    root = root or repo_root()
    uri = tracking_uri(root)
    mlflow.set_tracking_uri(uri)
    lock_dir = root if root.is_dir() else Path.cwd()
    with FileLock(str(lock_dir / ".mlflow.lock"), timeout=300):
        client = MlflowClient(uri)
        found = client.get_experiment_by_name(experiment)
        if found is not None and uri == default_uri(root):
            relocate_copied_store(root, found.artifact_location)
        if found is not None:
            if found.tags.get(TAG_EXPERIMENT_KIND) != EXPERIMENT_KIND:  # stores made before the tag existed
                client.set_experiment_tag(found.experiment_id, TAG_EXPERIMENT_KIND, EXPERIMENT_KIND)
            return str(found.experiment_id)
        location = artifact_location(root) if uri.startswith(("sqlite:", "file:", "/")) else None
        return str(
            client.create_experiment(
                experiment, artifact_location=location, tags={TAG_EXPERIMENT_KIND: EXPERIMENT_KIND}
            )
        )


def _parent_run(client: MlflowClient, experiment_id: str, key: str, root: Path) -> str:
    with FileLock(str(root / ".mlflow.lock"), timeout=300):
        escaped = key.replace("'", "")
        found = client.search_runs(
            [experiment_id],
            filter_string=f"tags.`{TAG_PIPELINE_KEY}` = '{escaped}' and tags.`{TAG_ROLE}` = 'pipeline'",
            max_results=1,
        )
        if found:
            return str(found[0].info.run_id)
        exp_name = os.environ.get("DVC_EXP_NAME")
        name = f"pipeline {exp_name}" if exp_name else time.strftime("pipeline %Y-%m-%d %H:%M:%S")
        tags = {TAG_PIPELINE_KEY: escaped, TAG_ROLE: "pipeline"}
        if exp_name:
            tags[TAG_EXP_NAME] = exp_name
        run = client.create_run(experiment_id, run_name=name, tags=tags)
        client.set_terminated(run.info.run_id, "FINISHED")
        return str(run.info.run_id)


def stage_tags(stage: str, section: Mapping[str, Any]) -> dict[str, str]:
    """Tags every stage run carries."""
    import cascadelab

    tags = {
        TAG_STAGE: stage,
        TAG_PARAMS_HASH: params_hash(section),
        TAG_ROLE: "stage",
        TAG_SOURCE: str(Path(cascadelab.__file__).resolve().parent),  # which copy of the code ran
        TAG_PROCESSES: str(world_size()),
    }
    for env, tag in (("DVC_EXP_NAME", TAG_EXP_NAME), ("DVC_EXP_BASELINE_REV", TAG_BASELINE)):
        if os.environ.get(env):
            tags[tag] = os.environ[env]
    commit = git_commit() or os.environ.get("DVC_EXP_BASELINE_REV")
    if commit:
        tags[TAG_GIT_COMMIT] = commit
    return tags


@contextlib.contextmanager
def stage_run(stage: str, section: Mapping[str, Any], experiment: str = "cascadelab") -> Iterator[StageRun]:
    """Open the MLflow run of one stage execution, log its params and tags, and close it on exit.

    `section` is the stage's params (already validated), logged flattened and hashed into a tag.
    Transformers' MLflow callback, created inside this block, logs into this run (it reuses the active one).
    In a multi-process launch only rank 0 opens a run; the other ranks get a `SilentStageRun`.
    """
    if not is_main_process():
        yield SilentStageRun()
        return
    root = repo_root()
    experiment_id = init_store(experiment, root)
    client = MlflowClient(mlflow.get_tracking_uri())
    tags = stage_tags(stage, section)
    key = pipeline_key()
    if key is not None:
        tags[TAG_PARENT] = _parent_run(client, experiment_id, key, root)
        tags[TAG_PIPELINE_KEY] = key.replace("'", "")
    run_name = f"{stage} {os.environ['DVC_EXP_NAME']}" if os.environ.get("DVC_EXP_NAME") else stage
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=tags) as run:
        handle = StageRun(run.info.run_id, experiment_id, client)
        handle.log_params(section)
        yield handle


def log_child_run(
    parent: StageRun,
    name: str,
    params: Mapping[str, Any],
    metrics: Mapping[str, float],
    role: str,
) -> str:
    """Log one finished child run under `parent` (a trial of a search inside a stage); return its id.

    The child carries the parent's stage tag, `TAG_PARENT` and `TAG_ROLE = role`; it is written through the
    client, so the parent stays the active run.
    """
    from mlflow.entities import Metric, Param

    client = parent.client
    stage = client.get_run(parent.run_id).data.tags.get(TAG_STAGE, "")
    tags = {TAG_PARENT: parent.run_id, TAG_ROLE: role, TAG_STAGE: stage}
    run = client.create_run(parent.experiment_id, run_name=name, tags=tags)
    now = int(time.time() * 1000)
    client.log_batch(
        run.info.run_id,
        metrics=[Metric(key, float(value), now, 0) for key, value in flatten(metrics).items() if _is_number(value)],
        params=[Param(key, str(value)[:6000]) for key, value in flatten(params).items()],
    )
    client.set_terminated(run.info.run_id, "FINISHED")
    return str(run.info.run_id)


def log_pipeline_summary(
    run: StageRun, headline: Mapping[str, float], stage_files: Mapping[str, Sequence[Path]]
) -> list[str]:
    """Put `headline` on this execution's parent run and log each stage DVC skipped as a `cached` child.

    A stage whose outputs DVC found in its cache runs no process, so it leaves no run in this pipeline
    execution; its child here carries the numbers and the files it left: `stage_files[stage]`, its metrics
    file first (a stage without one is skipped), then its details and timing files. Returns the stages
    logged as cached (none when this run has no parent: a stage run by hand).
    """
    client = run.client
    parent = client.get_run(run.run_id).data.tags.get(TAG_PARENT)
    if parent is None:
        return []
    _log_numbers(client, parent, headline)
    children = client.search_runs([run.experiment_id], filter_string=f"tags.`{TAG_PARENT}` = '{parent}'")
    present = {child.data.tags.get(TAG_STAGE) for child in children}
    cached = []
    for stage, files in stage_files.items():
        if stage in present or not files or not files[0].is_file():
            continue
        child = client.create_run(
            run.experiment_id,
            run_name=f"{stage} (cached)",
            tags={TAG_PARENT: parent, TAG_ROLE: "cached", TAG_STAGE: stage, TAG_CACHED: "true"},
        )
        for path in (path for path in files if path.is_file()):
            _log_numbers(client, child.info.run_id, json.loads(path.read_text()))
            client.log_artifact(child.info.run_id, str(path))
        client.set_terminated(child.info.run_id, "FINISHED")
        cached.append(stage)
    return cached


def _log_numbers(client: MlflowClient, run_id: str, values: Mapping[str, Any]) -> None:
    """Log the numeric leaves of `values` as metrics of `run_id`, in batches MLflow accepts."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    numbers = [Metric(key, float(value), now, 0) for key, value in flatten(values).items() if _is_number(value)]
    for start in range(0, len(numbers), 1000):
        client.log_batch(run_id, metrics=numbers[start : start + 1000])
