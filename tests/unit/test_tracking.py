from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from cascadelab import tracking


@pytest.fixture
def repo(tmp_path, monkeypatch):
    (tmp_path / ".dvc").mkdir()
    work = tmp_path / "sub" / "dir"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    for var in ("DVC_ROOT", "MLFLOW_TRACKING_URI", "DVC_EXP_NAME", "DVC_EXP_BASELINE_REV", tracking.PIPELINE_ID_ENV):
        monkeypatch.delenv(var, raising=False)
    yield tmp_path
    mlflow.set_tracking_uri(None)


def test_uri_is_anchored_at_the_repo_root_without_dvc_root(repo):
    assert tracking.repo_root() == repo
    assert tracking.tracking_uri() == f"sqlite:///{repo}/mlflow.db"
    assert tracking.artifact_location() == (repo / "mlruns").as_uri()


def test_dvc_root_wins_over_the_working_directory(repo, tmp_path_factory, monkeypatch):
    original = tmp_path_factory.mktemp("original")
    monkeypatch.setenv("DVC_ROOT", str(original))
    assert tracking.repo_root() == original
    assert tracking.tracking_uri() == f"sqlite:///{original}/mlflow.db"


def test_explicit_tracking_uri_overrides(repo, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking.tracking_uri() == "http://127.0.0.1:5000"


def test_params_hash_is_stable_and_order_free():
    assert tracking.params_hash({"a": 1, "b": {"c": 2}}) == tracking.params_hash({"b": {"c": 2}, "a": 1})
    assert tracking.params_hash({"a": 1}) != tracking.params_hash({"a": 2})


def test_stage_run_tags_params_and_shared_parent(repo, monkeypatch):
    monkeypatch.setenv("DVC_EXP_NAME", "my-exp")
    monkeypatch.setenv("DVC_EXP_BASELINE_REV", "abc123")
    section = {"seed": 1, "prepare": {"sizes": {"train": 10}}}
    with tracking.stage_run("prepare", section, experiment="t") as first:
        first.log_metrics({"x": 1.0, "nested": {"y": 2}, "label": "skipped"}, step=3)
    with tracking.stage_run("coarse_sft", {"seed": 1}, experiment="t") as second:
        pass
    client = MlflowClient(tracking.tracking_uri())
    run = client.get_run(first.run_id)
    tags = run.data.tags
    assert tags[tracking.TAG_STAGE] == "prepare"
    assert tags[tracking.TAG_EXP_NAME] == "my-exp"
    assert tags[tracking.TAG_BASELINE] == "abc123"
    assert tags[tracking.TAG_PARAMS_HASH] == tracking.params_hash(section)
    assert tags[tracking.TAG_GIT_COMMIT] == "abc123"  # not a git repo: falls back to the baseline
    assert run.data.params["prepare.sizes.train"] == "10"
    assert run.data.metrics == {"x": 1.0, "nested.y": 2.0}
    parent = tags[tracking.TAG_PARENT]
    assert client.get_run(second.run_id).data.tags[tracking.TAG_PARENT] == parent
    assert client.get_run(parent).data.tags[tracking.TAG_ROLE] == "pipeline"
    experiment = client.get_experiment_by_name("t")
    assert experiment.artifact_location == (repo / "mlruns").as_uri()
    assert (repo / "mlflow.db").is_file()


def test_different_pipeline_ids_get_different_parents(repo, monkeypatch):
    parents = []
    for pipeline in ("one", "two"):
        monkeypatch.setenv(tracking.PIPELINE_ID_ENV, pipeline)
        with tracking.stage_run("prepare", {}, experiment="t") as run:
            pass
        parents.append(MlflowClient(tracking.tracking_uri()).get_run(run.run_id).data.tags[tracking.TAG_PARENT])
    assert parents[0] != parents[1]


def test_standalone_run_has_no_parent(repo):
    with tracking.stage_run("prepare", {}, experiment="t") as run:
        pass
    assert tracking.TAG_PARENT not in MlflowClient(tracking.tracking_uri()).get_run(run.run_id).data.tags


def test_flatten():
    assert tracking.flatten({"a": {"b": 1, "c": {"d": 2}}, "e": 3}) == {"a.b": 1, "a.c.d": 2, "e": 3}


def test_store_is_created_under_the_root_not_the_cwd(repo):
    with tracking.stage_run("prepare", {}, experiment="t"):
        pass
    assert not (Path.cwd() / "mlflow.db").exists()


def test_concurrent_stages_initialise_a_fresh_store_safely(repo):
    # Queued experiments start several stage processes at once against a store that may not exist yet.
    import os
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from cascadelab import tracking\n"
        "with tracking.stage_run('s', {'i': sys.argv[1]}, experiment='t') as run:\n"
        "    run.log_metrics({'x': 1.0})\n"
    )
    env = dict(os.environ, PYTHONPATH=str(Path(tracking.__file__).resolve().parents[1]))
    procs = [subprocess.Popen([sys.executable, "-c", code, str(i)], cwd=repo, env=env) for i in range(3)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
    client = MlflowClient(tracking.tracking_uri(repo))
    runs = client.search_runs([client.get_experiment_by_name("t").experiment_id])
    assert len(runs) == 3


def test_the_experiment_opens_on_the_model_training_view(repo):
    tracking.init_store("kind")
    client = MlflowClient(tracking.tracking_uri())
    experiment = client.get_experiment_by_name("kind")
    assert experiment.tags[tracking.TAG_EXPERIMENT_KIND] == "custom_model_development"
    client.delete_experiment_tag(experiment.experiment_id, tracking.TAG_EXPERIMENT_KIND)  # a store made before
    tracking.init_store("kind")
    assert client.get_experiment_by_name("kind").tags[tracking.TAG_EXPERIMENT_KIND] == "custom_model_development"


def test_the_pipeline_summary_fills_the_parent_and_logs_skipped_stages_as_cached(repo, monkeypatch):
    import json

    monkeypatch.setenv(tracking.PIPELINE_ID_ENV, "summary")
    metrics = repo / "metrics"
    metrics.mkdir()
    (metrics / "coarse_sft.json").write_text(json.dumps({"em": 20.0}))
    (metrics / "limen.json").write_text(json.dumps({"auroc": 0.9, "per_task": {"mul": 0.8}, "note": "text"}))
    (repo / "timing.json").write_text(json.dumps({"fit_seconds": 2.0}))
    files = {stage: (metrics / f"{stage}.json", repo / "timing.json") for stage in ("coarse_sft", "limen", "acoc")}
    with tracking.stage_run("coarse_sft", {"seed": 1}, experiment="t"):
        pass  # ran in this execution
    with tracking.stage_run("report", {"seed": 1}, experiment="t") as report:
        cached = tracking.log_pipeline_summary(report, {"coarse_em": 20.0}, files)
    assert cached == ["limen"]  # acoc left no metrics file: nothing to log
    client = MlflowClient(tracking.tracking_uri())
    parent_id = client.get_run(report.run_id).data.tags[tracking.TAG_PARENT]
    assert client.get_run(parent_id).data.metrics == {"coarse_em": 20.0}
    children = client.search_runs([report.experiment_id], f"tags.`{tracking.TAG_CACHED}` = 'true'")
    assert [child.data.tags[tracking.TAG_STAGE] for child in children] == ["limen"]
    limen = children[0]
    assert limen.data.tags[tracking.TAG_PARENT] == parent_id and limen.info.run_name == "limen (cached)"
    assert limen.data.metrics == {"auroc": 0.9, "per_task.mul": 0.8, "fit_seconds": 2.0}  # its timing file too
    assert [item.path for item in client.list_artifacts(limen.info.run_id)] == ["limen.json", "timing.json"]


def test_a_stage_run_by_hand_has_no_pipeline_to_summarise(repo):
    with tracking.stage_run("report", {"seed": 1}, experiment="t") as report:
        assert tracking.log_pipeline_summary(report, {"x": 1.0}, {"limen": (repo / "limen.json",)}) == []


def test_a_rank_other_than_0_logs_nothing(repo, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with tracking.stage_run("coarse_sft", {"seed": 1}, experiment="t") as run:
        run.log_metrics({"x": 1.0})
        run.log_params({"a": 1})
    assert isinstance(run, tracking.SilentStageRun)
    assert not (repo / "mlflow.db").exists()


def test_a_copied_checkout_writes_artifacts_into_its_own_store(repo, tmp_path_factory, monkeypatch, capsys):
    with tracking.stage_run("prepare", {"seed": 1}, experiment="t") as first:
        (repo / "note.txt").write_text("first")
        first.log_artifact(repo / "note.txt")
    copy = tmp_path_factory.mktemp("copy") / "checkout"
    import shutil

    shutil.copytree(repo, copy)
    monkeypatch.chdir(copy)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # mlflow.set_tracking_uri exported the first store
    with tracking.stage_run("coarse_sft", {"seed": 1}, experiment="t") as second:
        (copy / "note.txt").write_text("second")
        second.log_artifact(copy / "note.txt")
    client = MlflowClient(tracking.tracking_uri())
    assert tracking.tracking_uri() == f"sqlite:///{copy}/mlflow.db"
    assert client.get_experiment_by_name("t").artifact_location == (copy / "mlruns").as_uri()
    for run_id in (first.run_id, second.run_id):  # old runs follow too: their artifacts were copied along
        uri = client.get_run(run_id).info.artifact_uri
        assert uri.startswith((copy / "mlruns").as_uri() + "/")
        assert Path(uri.removeprefix("file://"), "note.txt").is_file()
    assert not any(second.run_id in str(path) for path in (repo / "mlruns").rglob("*"))  # the original is untouched
    assert f"mlflow.db was copied from {(repo / 'mlruns').as_uri()}" in capsys.readouterr().err
    assert tracking.relocate_copied_store(copy, (copy / "mlruns").as_uri()) is False  # once is enough
