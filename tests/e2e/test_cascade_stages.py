"""End to end: the four cascade stages under `dvc repro` in a temporary copy of the project, tiny params."""

import json

import pytest
from e2e_project import TINY_CASCADE, TINY_COARSE, TINY_PREPARE, dvc, make_project, stage_runs

from cascadelab.io import read_tsv

pytestmark = pytest.mark.slow

STAGES = ("cascade_pairs", "limen", "refiner", "cascade_eval")


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    overrides = {"prepare": TINY_PREPARE, "coarse_sft": TINY_COARSE, **TINY_CASCADE}
    return make_project(tmp_path_factory.mktemp("project"), overrides)


@pytest.fixture(scope="module")
def first_repro(project):
    return dvc(project, "repro", "cascade_eval")


def test_cascade_stages_run_in_order_after_coarse_sft(project, first_repro):
    order = [first_repro.index(f"Running stage '{s}'") for s in ("prepare", "coarse_sft", *STAGES)]
    assert order == sorted(order)
    assert "lego_phase1" not in first_repro  # not a dependency of the cascade chain
    repo, _ = project
    assert {r.data.tags["cascadelab.stage"] for r in stage_runs(repo)} == {"prepare", "coarse_sft", *STAGES}


def test_each_stage_writes_its_outputs(project, first_repro):
    repo, _ = project
    pairs = [json.loads(line) for line in (repo / "data" / "cascade_pairs" / "train.jsonl").read_text().splitlines()]
    assert pairs and {"prompt", "coarse", "steps", "answer", "task", "coarse_correct", "coarse_logprob"} <= set(
        pairs[0]
    )
    assert (repo / "models" / "limen" / "limen.safetensors").is_file()
    limen = json.loads((repo / "metrics" / "limen.json").read_text())
    assert 0.0 <= limen["threshold"] <= 1.0 and "val_ece" in limen and "val_approval_rate" in limen
    assert (repo / "models" / "refiner" / "mul" / "model.safetensors").is_file()  # one refiner per routed family
    assert (repo / "models" / "coarse_more" / "model.safetensors").is_file()  # the equal-compute control
    refiner = json.loads((repo / "metrics" / "refiner.json").read_text())
    assert refiner["train_steps"] == refiner["control_steps"] == 12  # control budget: the refiners' steps
    evaluation = json.loads((repo / "metrics" / "cascade_eval.json").read_text())
    for key in ("em_coarse", "em_refined", "em_cascade", "em_control", "tokens_per_item_cascade"):
        assert key in evaluation  # rates over an empty set (no coarse-right item) are left out
    assert {"em_coarse_mul", "em_cascade_mul", "em_control_mul", "cascade_minus_control_mul"} <= set(evaluation)
    assert evaluation["tokens_ratio_coarse"] == 1.0
    assert (repo / "plots" / "cascade_eval" / "accuracy_vs_compute.png").stat().st_size > 0
    families = read_tsv(repo / "plots" / "cascade_eval" / "families.tsv")
    tasks = [row["task"] for row in families]
    assert tasks[-1] == "all" and tasks[:-1] == sorted(tasks[:-1]) and "mul" in tasks
    assert int(families[-1]["items"]) == sum(int(row["items"]) for row in families[:-1])


def test_threshold_sweep_has_a_monotone_compute_axis(project, first_repro):
    repo, _ = project
    points = read_tsv(repo / "plots" / "cascade_eval" / "sweep.tsv")
    tokens = [float(p["tokens_per_item"]) for p in points]
    assert len(points) >= 2 and tokens == sorted(tokens)
    assert float(points[0]["refined_share"]) == 0.0  # never refine: the coarse model alone
    evaluation = json.loads((repo / "metrics" / "cascade_eval.json").read_text())
    assert float(points[0]["em"]) == pytest.approx(evaluation["em_coarse"], abs=1e-4)


def test_second_repro_runs_nothing(project, first_repro):
    assert "Running stage" not in dvc(project, "repro", "cascade_eval")
