"""End to end: the real project in a temporary git repository with tiny params, driven through dvc."""

import json
import sys

import pytest
from e2e_project import TINY_PREPARE, TINY_SIGMA, client, dvc, make_project, run, stage_runs

from cascadelab.pipeline.headline import HEADLINE
from cascadelab.pipeline.measurements import is_measurement

pytestmark = pytest.mark.slow

TARGETS = ("coarse_sft", "sigma_pretrain")
TINY = {
    "prepare": TINY_PREPARE,
    "coarse_sft": {
        "model": {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64},
        "train": {"max_steps": 20, "batch_size": 8, "logging_steps": 5, "warmup_steps": 2, "num_threads": 1},
        "mix": {"add": 0.4, "sub": 0.4, "mul": 0.2},
        "eval": {"batch_size": 64, "max_new_tokens": 6, "sample_predictions": 4},
    },
    "sigma_pretrain": TINY_SIGMA,
}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    # Stages not named in TARGETS (LEGO, hybrid RNN) have their own e2e tests with their own tiny params.
    return make_project(tmp_path_factory.mktemp("project"), TINY)


def test_repro_runs_every_stage_then_nothing(project):
    repo, env = project
    out = dvc(project, "repro", *TARGETS)
    for stage in ("prepare", "coarse_sft", "sigma_pretrain"):
        assert f"Running stage '{stage}'" in out
    metrics = json.loads((repo / "metrics" / "coarse_sft.json").read_text())
    assert set(metrics) == set(HEADLINE["coarse_sft"])  # the few figures DVC shows; the rest in details.json
    details = json.loads((repo / "plots" / "coarse_sft" / "details.json").read_text())
    assert {"em_add", "train_tokens"} <= set(details)
    assert not any(is_measurement(key) for key in metrics | details)  # wall times live apart from the science
    timing = json.loads((repo / "plots" / "coarse_sft" / "timing.json").read_text())
    assert {"train_seconds", "train_tokens_per_s", "eval_sequences_per_s"} <= set(timing)
    assert "resumed_from_step" not in metrics | details | timing  # where a run resumed goes to MLflow only
    assert (repo / "models" / "coarse" / "model.safetensors").is_file()
    assert len(stage_runs(repo)) == 3
    parents = {r.data.tags["mlflow.parentRunId"] for r in stage_runs(repo)}
    assert len(parents) == 1  # one pipeline execution, one parent
    out = dvc(project, "repro", *TARGETS)
    assert "Running stage" not in out
    assert len(stage_runs(repo)) == 3
    # Transformers' MLflow callback logged into the stage's run (no extra run, training loss present).
    coarse = stage_runs(repo, "coarse_sft")[0]
    assert {"loss", "em", "train_tokens_per_s"} <= set(coarse.data.metrics)  # science and measurements both
    # Params are the stage's own section, namespaced; transformers' config and TrainingArguments dumps stay out.
    assert all(key == "seed" or key.startswith("coarse_sft.") for key in coarse.data.params)
    assert coarse.data.params["coarse_sft.train.max_steps"] == "20"
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-qm", "baseline"], repo, env)


def test_dvc_metrics_and_plots_show(project):
    repo, _ = project
    shown = dvc(project, "metrics", "show")
    assert "test_ppl" in shown and "em_add" not in shown  # the headline only; the breakdowns are in details.json
    assert "train_seconds" not in shown and "tokens_per_s" not in shown
    dvc(project, "plots", "show", "-o", str(repo / "plots_html"))
    assert (repo / "plots_html" / "index.html").is_file()


def test_exp_run_set_param_reruns_coarse_sft_only(project):
    repo, _ = project
    out = dvc(project, "exp", "run", *TARGETS, "-S", "coarse_sft.train.max_steps=24", "-n", "more-steps")
    assert "Running stage 'coarse_sft'" in out
    assert "Running stage 'prepare'" not in out
    runs = stage_runs(repo, "coarse_sft")
    assert any(r.data.tags.get("dvc.exp_name") == "more-steps" for r in runs)
    assert "more-steps" in dvc(project, "exp", "show", "--csv")


def test_temp_experiment_lands_in_root_store_and_runs_its_snapshot(project):
    repo, env = project
    # Even with the workspace's src on PYTHONPATH (as an editable install would do), the stage must
    # import the code of the experiment's own temporary copy.
    env = dict(env, PYTHONPATH=str(repo / "src"))
    out = run(
        [
            sys.executable,
            "-m",
            "dvc",
            "exp",
            "run",
            "--temp",
            *TARGETS,
            "-S",
            "coarse_sft.train.max_steps=22",
            "-n",
            "tmp-exp",
        ],
        repo,
        env,
    )
    assert "Running stage 'coarse_sft'" in out
    runs = [r for r in stage_runs(repo, "coarse_sft") if r.data.tags.get("dvc.exp_name") == "tmp-exp"]
    assert len(runs) == 1
    source = runs[0].data.tags["cascadelab.source"]
    assert not source.startswith(str(repo / "src")), source
    assert ".dvc/tmp/exps" in source
    artifacts = client(repo).list_artifacts(runs[0].info.run_id)
    assert any(a.path.endswith("coarse_sft.json") for a in artifacts)
    location = client(repo).get_experiment_by_name("cascadelab").artifact_location
    assert location == (repo / "mlruns").as_uri()
