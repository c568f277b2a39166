"""End to end: `prepare` + `acoc` (the growth study, two workers) under `dvc repro` in a temporary repository."""

import json

import pytest
import yaml
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

pytestmark = pytest.mark.slow
ARMS = ["S", "L", "G", "A"]
SEEDS = TINY_ACOC["seeds"]


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return make_project(tmp_path_factory.mktemp("acoc"), {"prepare": TINY_PREPARE, "acoc": TINY_ACOC})


def test_acoc_stage_runs_every_arm_on_every_seed_on_one_flop_budget(project):
    repo, _ = project
    out = dvc(project, "repro", "acoc")
    assert "Running stage 'prepare'" in out and "Running stage 'acoc'" in out
    assert "Running stage 'coarse_sft'" not in out

    figures = stage_figures(repo, "acoc")
    assert set(figures["arms"]) == set(ARMS) and set(figures["seeds"]) == {str(s) for s in SEEDS}
    assert figures["flops"]["ratio_L_over_S"] > 1.0
    for arm in ARMS:
        assert {"em", "em_add", "em_mul", "params", "train_flops", "val_loss_median"} <= set(figures["arms"][arm])
        spent = [figures["seeds"][str(s)][arm]["train_flops"] for s in SEEDS]
        assert all(budget <= f < 1.2 * budget for f in spent for budget in [figures["flops"]["budget"]])
    assert figures["arms"]["G"]["params"] == figures["arms"]["L"]["params"] > figures["arms"]["S"]["params"]
    bars = figures["bars"]
    assert bars["seeds"] == 2 and bars["G_max_growth_jump_pct"] < 1e-3  # dense mixing: splits preserve the function
    assert set(bars["met"]) == {
        "saving_median_20pct", "saving_positive", "saving_above_S", "final_within_1pct_of_L", "beats_S",
        "growth_jump_1pct",
    }  # fmt: skip
    assert {"signal_stagnation", "signal_saturation", "signal_vote", "growth_causes"} <= set(figures["adaptive"])

    items = [json.loads(line) for line in (repo / "plots" / "acoc" / "items.jsonl").read_text().splitlines()]
    tasks = yaml.safe_load((repo / "params.yaml").read_text())["acoc"]["tasks"]  # the default mix's four tasks
    assert len(items) == len(SEEDS) * len(tasks) * TINY_ACOC["test_items_per_task"]
    assert all(set(ARMS) <= set(item) and item["id"].startswith(f"{item['seed']}:") for item in items)
    curves = read_tsv(repo / "plots" / "acoc" / "curves.tsv")
    assert list(curves[0]) == ["flops", *ARMS] and (repo / "plots" / "acoc" / "loss_vs_flops.png").is_file()
    events = [json.loads(line) for line in (repo / "plots" / "acoc" / "events.jsonl").read_text().splitlines()]
    assert sum(e["arm"] == "G" and e["type"] == "split_all" for e in events) == 2 * len(SEEDS)

    grown = AutoModelForCausalLM.from_pretrained(repo / "models" / "acoc_baselines" / "G")
    assert isinstance(grown, ACOCForCausalLM) and grown.config.experts_per_layer == [4]
    assert AutoModelForCausalLM.from_pretrained(repo / "models" / "acoc").config.model_type == "acoc"
    history = load_from_disk(str(repo / "data" / "acoc_history"))
    assert {"arm", "seed", "step", "flops", "val_loss"} <= set(history["curves"].column_names)

    (stage,) = stage_runs(repo, "acoc")
    steps = [m.step for m in client(repo).get_metric_history(stage.info.run_id, "G/seed0/val_loss")]
    assert steps[0] == 0 and steps == sorted(steps)
    assert "Running stage" not in dvc(project, "repro", "acoc")


def test_bad_acoc_param_fails_with_one_line(project):
    out = run_stage_with_edit(project, "acoc.py", "stagnation_tol: 0.15", "stagnation_tol: -1")
    assert out.strip().splitlines() == [
        "error: params.yaml: acoc.growth.stagnation_tol: must be greater than or equal to 0 (got -1) "
        "— a val-loss gain below this counts as stagnation"
    ]
