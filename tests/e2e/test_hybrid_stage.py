"""End to end: `prepare` + `hybrid_rnn` under `dvc repro` in a temporary git repository with tiny params."""

import gzip
import json

import pytest
import yaml
from e2e_project import TINY_PREPARE, client, dvc, make_project, run, stage_figures, stage_runs

from cascadelab.pipeline.measurements import is_measurement

pytestmark = pytest.mark.slow

TINY_HYBRID = {
    "model": {"preset": "tiny"},
    "train": {
        "max_steps": 20,
        "batch_size": 8,
        "logging_steps": 5,
        "warmup_steps": 2,
        "eval_steps": 10,
        "num_threads": 1,
    },
    "mix": {"add": 0.4, "sub": 0.4, "mul": 0.2},
    "eval": {"batch_size": 64, "max_new_tokens": 6, "sample_predictions": 4},
}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return make_project(tmp_path_factory.mktemp("hybrid"), {"prepare": TINY_PREPARE, "hybrid_rnn": TINY_HYBRID})


def test_repro_hybrid_rnn_writes_model_metrics_curves_and_one_mlflow_run(project):
    repo, _ = project
    out = dvc(project, "repro", "hybrid_rnn")
    assert "Running stage 'prepare'" in out and "Running stage 'hybrid_rnn'" in out
    assert "Running stage 'coarse_sft'" not in out  # the hybrid branch does not need the coarse model
    metrics = stage_figures(repo, "hybrid_rnn")
    assert {"em", "em_add", "em_add1", "beam_em_add", "sample_em_add", "test_ppl", "params"} <= set(metrics)
    assert "train_steps" in metrics and not any(is_measurement(key) for key in metrics)
    timing = json.loads((repo / "plots" / "hybrid_rnn" / "timing.json").read_text())
    assert {"train_seconds", "train_tokens_per_s", "eval_tokens_per_s", "beam_eval_tokens_per_s"} <= set(timing)
    assert (repo / "models" / "hybrid_rnn" / "model.safetensors").is_file()
    assert (repo / "models" / "hybrid_rnn" / "tokenizer.json").is_file()
    config = json.loads((repo / "models" / "hybrid_rnn" / "config.json").read_text())
    assert config["model_type"] == "hybrid_rnn" and config["context"] == "sequence"
    train_rows = (repo / "plots" / "hybrid_rnn" / "train.tsv").read_text().splitlines()
    assert train_rows[0].split("\t") == ["step", "loss", "learning_rate"] and len(train_rows) == 1 + 4
    val_rows = (repo / "plots" / "hybrid_rnn" / "val.tsv").read_text().splitlines()
    assert val_rows[0].split("\t") == ["step", "val_loss"] and len(val_rows) == 1 + 2

    runs = stage_runs(repo, "hybrid_rnn")
    assert len(runs) == 1
    logged = runs[0].data
    assert logged.params["hybrid_rnn.model.preset"] == "tiny"
    assert {"val_loss", "em_add", "beam_em", "stage_seconds", "train_tokens_per_s"} <= set(logged.metrics)
    history = client(repo).get_metric_history(runs[0].info.run_id, "val_loss")
    assert sorted(m.step for m in history) == [10, 20]

    assert "Running stage" not in dvc(project, "repro", "hybrid_rnn")


def test_make_claims_queues_one_experiment_per_training_seed_on_the_same_corpus_and_gathers_them(project):
    repo, env = project
    dvc(project, "repro", "hybrid_rnn")
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-qm", "default run"], repo, env)
    seed_runs = ["env", "PYTHONPATH=src", "python", "-m", "cascadelab.pipeline.seed_runs"]
    run([*seed_runs, "queue", "1", "2", "--targets", "hybrid_rnn"], repo, env)
    dvc(project, "exp", "run", "--run-all", "--jobs", "1")
    out = run([*seed_runs, "gather", "1", "2", "--targets", "hybrid_rnn", "--seconds", "9"], repo, env)
    assert "seed_runs: gathered 9 files under metrics/seeds/" in out  # 2 seeds × (3 figures + items) + runs.json

    runs = json.loads((repo / "metrics/seeds/runs.json").read_text())
    assert [r["training_seed"] for r in runs["runs"]] == [1, 2] and runs["stages"] == ["hybrid_rnn"]
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    ids = [json.loads(line)["id"] for line in (repo / "plots/hybrid_rnn/items.jsonl").read_text().splitlines()]
    losses = set()
    for seed, rev in ((r["training_seed"], r["rev"]) for r in runs["runs"]):
        seeded = yaml.safe_load(run(["git", "show", f"{rev}:dvc.lock"], repo, env))["stages"]
        assert seeded["prepare"] == lock["prepare"]  # prepare stayed cached: the same corpus and test items
        assert seeded["hybrid_rnn"]["params"]["params.yaml"]["training_seed"] == seed
        items = gzip.decompress((repo / f"metrics/seeds/{seed}/plots/hybrid_rnn/items.jsonl.gz").read_bytes())
        assert [json.loads(line)["id"] for line in items.decode().splitlines()] == ids  # items pair across seeds
        losses.add(json.loads((repo / f"metrics/seeds/{seed}/metrics/hybrid_rnn.json").read_text())["test_ppl"])
    losses.add(stage_figures(repo, "hybrid_rnn")["test_ppl"])
    assert len(losses) == 3  # three training seeds, three models
