"""The real project copied into a temporary git repository with tiny params, driven through dvc (e2e helpers)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml
from mlflow.tracking import MlflowClient

ROOT = Path(__file__).resolve().parents[2]

TINY_PREPARE = {
    "families": {"add": {"difficulties": [1]}, "sub": {"difficulties": [1]}, "mul": {"difficulties": [1]}},
    "sizes": {"train": 60, "val": 8, "test": 12},
    "code": {"enabled": False},  # the code tasks need letters the tiny corpus's tokenizer lacks
}
TINY_SIGMA = {
    "model": {"preset": "tiny"},
    "train": {
        "max_steps": 20,
        "batch_size": 8,
        "logging_steps": 5,
        "warmup_steps": 2,
        "eval_steps": 10,
        "eval_records": 16,
        "num_threads": 1,
    },
    "mix": {"add": 0.4, "sub": 0.4, "mul": 0.2},
    "baseline": {"hidden_size": 32, "num_layers": 3, "num_heads": 2, "intermediate_size": 64},
    "eval": {"batch_size": 64, "max_new_tokens": 6, "sample_predictions": 4},
}
TINY_LEGO = {
    "model": {"hidden_size": 32, "num_heads": 2, "intermediate_size": 64},
    "phase1": {"max_steps": 20, "batch_size": 8, "eval_every": 10, "warmup_steps": 2, "log_every": 5},
    "hard_examples": {"max_train_rows": 150, "max_val_rows": 100, "batch_size": 32},
    "phase2": {"max_steps": 20, "batch_size": 8, "eval_every": 10, "warmup_steps": 2, "log_every": 5},
    "baseline": {"train": {"batch_size": 8, "eval_every": 10, "warmup_steps": 2, "log_every": 5}},
    "eval": {"batch_size": 64, "max_new_tokens": 6, "tradeoff_exit_shares": [0.5]},
    "num_threads": 1,
}
TINY_COARSE = {
    "model": {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64},
    "train": {"max_steps": 20, "batch_size": 8, "logging_steps": 5, "warmup_steps": 2, "num_threads": 1},
    "mix": {"add": 0.4, "sub": 0.4, "mul": 0.2},
    "eval": {"batch_size": 64, "max_new_tokens": 6, "sample_predictions": 4},
}
TINY_CASCADE = {
    "cascade_pairs": {"num_samples": 1, "max_new_tokens": 6, "max_prompts_per_task": 20, "num_threads": 1},
    "limen": {"num_threads": 1},
    "refiner": {
        "mix": {"mul": 0.8, "word": 0.0, "expr": 0.0, "add": 0.2, "sub": 0.0},  # merged into the default mix
        "route_tasks": ["mul"],
        "family_steps": {"mul": 12},  # the default's mul budget would be merged in otherwise
        "fresh_per_cell": 60,
        "parallel": True,
        "max_new_tokens": 16,
        "train": {"max_steps": 12, "batch_size": 8, "warmup_steps": 2, "logging_steps": 4, "num_threads": 1},
    },
    "cascade_eval": {
        "cascade": {"coarse_max_new_tokens": 6, "refiner_max_new_tokens": 16},
        "sweep_points": 5,
        "sample_predictions": 4,
        "num_threads": 1,
    },
}

# A one-expert model with a 2-unit expert saturates on 1-digit addition within three 30-step cycles: the loop
# must grow on its own signals (before `sub` arrives at cycle 3 with its new-task split).
TINY_ACOC = {
    "tasks": {"add": 0, "sub": 0},
    "steps_per_cycle": 20,
    "batch_size": 16,
    "learning_rate": 0.01,
    "lr_warmup_steps": 5,
    "num_threads": 1,
    "test_items_per_task": 12,
    "max_new_tokens": 4,
    "log_every": 20,
    "eval_batch_size": 64,
    "seeds": [0, 1],
    "model": {"hidden_size": 16, "num_layers": 1, "num_heads": 2, "expert_width": 4},
    "growth": {"stagnation_tol": 0.15},
    "warmup": {"steps": 10},
    "vote": {"variants": 3},
    "saturation": {"batches": 1},
    "continual": {"fisher_batches": 2},
    "study": {"budget_large_steps": 40, "eval_every": 10, "val_items_per_task": 8, "workers": 2},
}


def deep_update(base, extra):
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            deep_update(base[key], value)
        else:
            base[key] = value
    return base


def make_project(repo, overrides):
    """Copy the project (committed and working-tree code) into `repo` with `overrides` on params.yaml; git init."""
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    for name in tracked.split():
        skipped = name.startswith(("tests/", "metrics/", "plots/")) or name == "dvc.lock"
        if skipped and name != "metrics/seeds/README.md":  # the report's dep on the seed runs: none gathered yet
            continue
        target = repo / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if (ROOT / name).is_file():
            shutil.copy2(ROOT / name, target)
    for name in ("stages", "src"):  # also files not committed yet, when run from a working tree
        shutil.copytree(ROOT / name, repo / name, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", "params.yaml", ".dvcignore", ".gitignore", ".dvc/config", ".dvc/.gitignore"):
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, repo / name)
    params = deep_update(yaml.safe_load((ROOT / "params.yaml").read_text()), overrides)
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


def run(cmd, cwd, env, check=True):
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    if check and result.returncode:
        raise AssertionError(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result.stdout + result.stderr


def run_stage_with_edit(project, script, old, new):
    """Run `stages/<script>` with `old` replaced by `new` in params.yaml (restored after); its output."""
    repo, env = project
    params = repo / "params.yaml"
    text = params.read_text()
    try:
        params.write_text(text.replace(old, new))
        return run(["env", "PYTHONPATH=src", "python", f"stages/{script}"], repo, env, check=False)
    finally:
        params.write_text(text)


def dvc(project, *args):
    repo, env = project
    return run([sys.executable, "-m", "dvc", *args], repo, env)


def stage_figures(repo, stage):
    """A stage's science as the report reads it: its headline metrics file merged with its details file."""
    figures = json.loads((repo / "metrics" / f"{stage}.json").read_text())
    return deep_update(figures, json.loads((repo / "plots" / stage / "details.json").read_text()))


def client(repo):
    return MlflowClient(f"sqlite:///{repo}/mlflow.db")


def stage_runs(repo, stage=None):
    runs = client(repo).search_runs(
        [client(repo).get_experiment_by_name("cascadelab").experiment_id], "tags.`cascadelab.role` = 'stage'"
    )
    return [r for r in runs if stage is None or r.data.tags["cascadelab.stage"] == stage]
