"""End to end: `prepare` + `hybrid_rnn` under `dvc repro` in a temporary git repository with tiny params."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow

TINY = {
    "prepare": {
        "families": {"add": {"difficulties": [1]}, "sub": {"difficulties": [1]}, "mul": {"difficulties": [1]}},
        "sizes": {"train": 60, "val": 8, "test": 12},
    },
    "hybrid_rnn": {
        "model": {"preset": "tiny"},
        "train": {"max_steps": 20, "batch_size": 8, "logging_steps": 5, "eval_steps": 10, "num_threads": 1},
        "mix": {"add": 0.4, "sub": 0.4, "mul": 0.2},
        "eval": {"batch_size": 64, "max_new_tokens": 6, "sample_predictions": 4},
    },
}


def deep_update(base, extra):
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            deep_update(base[key], value)
        else:
            base[key] = value
    return base


def run(cmd, cwd, env):
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    if result.returncode:
        raise AssertionError(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result.stdout + result.stderr


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """The project's tracked files (plus uncommitted src/stages) with tiny params, committed in a new repo."""
    repo = tmp_path_factory.mktemp("project")
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    for name in tracked.split():
        if name.startswith(("tests/", "metrics/", "plots/")) or name == "dvc.lock" or not (ROOT / name).is_file():
            continue
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, repo / name)
    for name in ("stages", "src"):
        shutil.copytree(ROOT / name, repo / name, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", ".dvcignore", ".gitignore", ".dvc/config", ".dvc/.gitignore", "models/.gitignore"):
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, repo / name)
    params = deep_update(yaml.safe_load((ROOT / "params.yaml").read_text()), TINY)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = dict(os.environ)
    env.update(
        PATH=f"{Path(sys.executable).parent}:{env['PATH']}",
        GIT_AUTHOR_NAME="t",
        GIT_AUTHOR_EMAIL="t@t",
        GIT_COMMITTER_NAME="t",
        GIT_COMMITTER_EMAIL="t@t",
        CASCADELAB_NO_PROGRESS="1",
    )
    for var in ("MLFLOW_TRACKING_URI", "DVC_ROOT", "CASCADELAB_PIPELINE_ID", "PYTHONPATH"):
        env.pop(var, None)
    run(["git", "init", "-q", "-b", "main"], repo, env)
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-qm", "tiny project"], repo, env)
    return repo, env


def test_repro_hybrid_rnn_writes_model_metrics_curves_and_one_mlflow_run(project):
    repo, env = project
    out = run([sys.executable, "-m", "dvc", "repro", "hybrid_rnn"], repo, env)
    assert "Running stage 'prepare'" in out and "Running stage 'hybrid_rnn'" in out
    assert "Running stage 'coarse_sft'" not in out  # the hybrid branch does not need the coarse model
    metrics = json.loads((repo / "metrics" / "hybrid_rnn.json").read_text())
    assert {"em", "em_add", "em_add1", "beam_em_add", "sample_em_add", "test_ppl", "params"} <= set(metrics)
    assert {"train_tokens_per_s", "eval_tokens_per_s", "beam_eval_tokens_per_s", "train_steps"} <= set(metrics)
    assert (repo / "models" / "hybrid_rnn" / "model.safetensors").is_file()
    assert (repo / "models" / "hybrid_rnn" / "tokenizer.json").is_file()
    config = json.loads((repo / "models" / "hybrid_rnn" / "config.json").read_text())
    assert config["model_type"] == "hybrid_rnn" and config["context"] == "sequence"
    train_rows = (repo / "plots" / "hybrid_rnn" / "train.tsv").read_text().splitlines()
    assert train_rows[0].split("\t") == ["step", "loss", "learning_rate"] and len(train_rows) == 1 + 4
    val_rows = (repo / "plots" / "hybrid_rnn" / "val.tsv").read_text().splitlines()
    assert val_rows[0].split("\t") == ["step", "val_loss"] and len(val_rows) == 1 + 2

    client = MlflowClient(f"sqlite:///{repo}/mlflow.db")
    experiment = client.get_experiment_by_name("cascadelab").experiment_id
    runs = client.search_runs([experiment], "tags.`cascadelab.stage` = 'hybrid_rnn'")
    assert len(runs) == 1
    logged = runs[0].data
    assert logged.params["hybrid_rnn.model.preset"] == "tiny"
    assert {"val_loss", "em_add", "beam_em", "stage_seconds"} <= set(logged.metrics)
    history = client.get_metric_history(runs[0].info.run_id, "val_loss")
    assert sorted(m.step for m in history) == [10, 20]

    assert "Running stage" not in run([sys.executable, "-m", "dvc", "repro", "hybrid_rnn"], repo, env)
