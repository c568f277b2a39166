"""End to end: `prepare` + `acoc` under `dvc repro` in a temporary repository with tiny params."""

import json

import pytest
from datasets import load_from_disk
from e2e_project import (
    TINY_ACOC,
    TINY_PREPARE,
    client,
    dvc,
    make_project,
    run_stage_with_edit,
    stage_figures,
    stage_runs,
)
from transformers import AutoModelForCausalLM

from cascadelab.io import read_tsv
from cascadelab.models.acoc import ACOCForCausalLM
from cascadelab.models.acoc.accounting import count_parameters

pytestmark = pytest.mark.slow
MODELS = ("acoc", "static_initial", "static_final")
CYCLES = list(range(TINY_ACOC["cycles"]))


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    # The growth scenario below is calibrated on the char vocabulary: with 256 byte tokens the tiny model's loss
    # stagnates later, and `add` alone no longer triggers a growth before `sub` arrives.
    prepare = {**TINY_PREPARE, "tokenizer": {"byte_fallback": False}}
    return make_project(tmp_path_factory.mktemp("acoc"), {"prepare": prepare, "acoc": TINY_ACOC})


def test_acoc_stage_grows_a_saturated_model_and_writes_models_history_metrics_and_plots(project):
    repo, _ = project
    out = dvc(project, "repro", "acoc")
    assert "Running stage 'prepare'" in out and "Running stage 'acoc'" in out
    assert "Running stage 'coarse_sft'" not in out

    # The loop grew on its own signals while `add` was the only task (sub arrives at cycle 3).
    events = [json.loads(line) for line in (repo / "plots" / "acoc" / "events.jsonl").read_text().splitlines()]
    decisions = {e["cycle"]: e for e in events if e["type"] == "decision"}
    assert sorted(decisions) == CYCLES and all(e["reasons"] for e in decisions.values())
    grown = [e for e in events if e["type"] == "split" and e["cycle"] < 3]
    assert grown and all(decisions[e["cycle"]]["expand"] for e in grown)
    assert not any(e["reason"].startswith("new task family") for e in grown)
    assert any(e["type"] == "split" and e["reason"] == "new task family: sub" for e in events)
    assert {"vote", "new_task", "protect_router", "warmup"} <= {e["type"] for e in events}

    metrics = stage_figures(repo, "acoc")
    for name in MODELS:
        keys = {"em", "em_add", "em_sub", "ppl", "ppl_add", "params", "parameter_steps", "forgetting", "train_tokens"}
        assert keys <= set(metrics[name]), name
    acoc, initial, final = (metrics[name] for name in MODELS)
    assert acoc["train_tokens"] == initial["train_tokens"] == final["train_tokens"]  # the very same batches
    assert acoc["params"] == final["params"] > initial["params"] == acoc["params_initial"]
    assert acoc["parameter_steps"] < final["parameter_steps"]
    bars = metrics["bars"]
    assert bars["max_expansion_jump_pct"] == pytest.approx(100 * acoc["max_expansion_jump"])
    assert abs(bars["max_expansion_jump_pct"]) < 1e-3  # dense mixing: splits preserve the function

    model = AutoModelForCausalLM.from_pretrained(repo / "models" / "acoc")
    assert isinstance(model, ACOCForCausalLM) and count_parameters(model).total == acoc["params"]
    assert model.config.experts_per_layer[0] > 1
    for cycle in CYCLES:
        assert (repo / "models" / "acoc" / "checkpoints" / f"cycle_{cycle:02d}" / "model.safetensors").is_file()
    for name in ("static_initial", "static_final"):
        baseline = AutoModelForCausalLM.from_pretrained(repo / "models" / "acoc_baselines" / name)
        assert count_parameters(baseline).total == metrics[name]["params"]

    history = load_from_disk(str(repo / "data" / "acoc_history"))
    assert set(history) == {*MODELS, "events"} and len(history["events"]) == len(events)
    assert history["acoc"]["cycle"] == CYCLES and history["static_final"]["cycle"] == CYCLES
    assert history["acoc"]["params"][-1] == acoc["params"] and history["acoc"]["val_acc_sub"][0] is None
    assert {"experts", "decision", "reasons", "saturation_json", "vote_json", "expansions_json"} <= set(
        history["acoc"].column_names
    )

    loss = read_tsv(repo / "plots" / "acoc" / "loss.tsv")
    assert list(loss[0]) == ["cycle", *MODELS] and [int(r["cycle"]) for r in loss] == CYCLES
    params = read_tsv(repo / "plots" / "acoc" / "params.tsv")
    assert int(params[-1]["acoc"]) > int(params[0]["acoc"]) == int(params[-1]["static_initial"])
    experts = read_tsv(repo / "plots" / "acoc" / "experts.tsv")
    assert int(experts[-1]["experts"]) > int(experts[0]["experts"]) == 1

    (stage,) = stage_runs(repo, "acoc")
    mlflow = client(repo)
    for key in ("acoc/cycle/params", "acoc/cycle/experts", "static_final/cycle/val_loss", "acoc/cycle/splits"):
        assert sorted(m.step for m in mlflow.get_metric_history(stage.info.run_id, key)) == CYCLES, key
    assert stage.data.metrics["acoc.em"] == pytest.approx(acoc["em"])
    artifacts = {a.path for a in mlflow.list_artifacts(stage.info.run_id, "plots")}
    assert {"plots/acoc_cycles.png", "plots/events.jsonl", "plots/loss.tsv"} <= artifacts

    assert "Running stage" not in dvc(project, "repro", "acoc")


def test_bad_acoc_param_fails_with_one_line(project):
    out = run_stage_with_edit(project, "acoc.py", "stagnation_tol: 0.15", "stagnation_tol: -1")
    assert out.strip().splitlines() == [
        "error: params.yaml: acoc.growth.stagnation_tol: must be greater than or equal to 0 (got -1) "
        "— a val-loss gain below this counts as stagnation"
    ]
