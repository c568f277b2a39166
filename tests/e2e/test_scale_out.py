"""End to end: stages log to a shared MLflow tracking server, and the DVC cache round-trips through a remote."""

import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from e2e_project import ROOT, TINY_COARSE, TINY_PREPARE, dvc, make_project
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.slow

STAGES = ("prepare", "coarse_sft")
OUTS = ("data/corpus", "data/tokenizer", "data/hidden_eval", "data/code_tasks", "models/coarse")  # their cached outs


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(url, server, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"make server exited with {server.returncode}:\n{server.stdout.read()}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"no MLflow server answered at {url} within {timeout} s")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`make server` (the README's command) on a free localhost port with its store in a temporary folder."""
    store = tmp_path_factory.mktemp("server")
    port = free_port()
    process = subprocess.Popen(
        ["make", "-s", "-C", str(ROOT), "server", f"SERVER_DIR={store}", f"SERVER_PORT={port}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # the server's workers share its process group: stop them all at the end
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, process)
        yield url, store
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def project(tmp_path_factory, server):
    url, _ = server
    repo, env = make_project(tmp_path_factory.mktemp("project"), {"prepare": TINY_PREPARE, "coarse_sft": TINY_COARSE})
    env["MLFLOW_TRACKING_URI"] = url
    return repo, env


def test_stages_log_runs_params_metrics_and_artifacts_to_the_server(project, server):
    repo, _ = project
    url, store = server
    out = dvc(project, "repro", "coarse_sft")
    for stage in STAGES:
        assert f"Running stage '{stage}'" in out
    assert not (repo / "mlflow.db").exists()  # nothing fell back to the local store
    client = MlflowClient(url)
    experiment = client.get_experiment_by_name("cascadelab")
    runs = client.search_runs([experiment.experiment_id], "tags.`cascadelab.role` = 'stage'")
    by_stage = {run.data.tags["cascadelab.stage"]: run for run in runs}
    assert set(by_stage) == set(STAGES)
    coarse = by_stage["coarse_sft"]
    assert coarse.data.params["coarse_sft.train.max_steps"] == "20"
    assert {"em", "stage_seconds", "loss"} <= set(coarse.data.metrics)
    artifacts = {item.path for item in client.list_artifacts(coarse.info.run_id)}
    assert {"coarse_sft.json", "source"} <= artifacts
    local = client.download_artifacts(coarse.info.run_id, "coarse_sft.json", str(repo.parent))
    assert Path(local).read_text() == (repo / "metrics" / "coarse_sft.json").read_text()
    assert any((store / "artifacts").rglob("coarse_sft.json"))  # the server holds the files, not the client


def test_dvc_push_then_pull_into_an_empty_cache_restores_everything(project, tmp_path):
    repo, _ = project
    dvc(project, "remote", "add", "--local", "-d", "test_store", str(tmp_path / "remote"))
    assert "pushed" in dvc(project, "push", *STAGES)
    shutil.rmtree(repo / ".dvc" / "cache")
    for folder in OUTS:
        shutil.rmtree(repo / folder)
    dvc(project, "pull", *STAGES)
    assert (repo / "models" / "coarse" / "model.safetensors").is_file()
    status = dvc(project, "status", *STAGES)
    assert "up to date" in status, status
    assert "Running stage" not in dvc(project, "repro", "coarse_sft")
