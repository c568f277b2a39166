"""End to end: the three LEGO stages under `dvc repro` in a temporary copy of the project, tiny params."""

import json

import pytest
import torch
from e2e_project import TINY_LEGO, TINY_PREPARE, dvc, make_project, run, run_stage_with_edit, stage_figures, stage_runs
from safetensors import safe_open

from cascadelab.models.lego import LEGOTransformer
from cascadelab.models.lego.flops import routed_compute_cost

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return make_project(tmp_path_factory.mktemp("project"), {"prepare": TINY_PREPARE, "lego": TINY_LEGO})


def test_lego_stages_run_in_order_and_write_their_outputs(project):
    repo, env = project
    out = dvc(project, "repro", "lego_phase2")
    order = [out.index(f"Running stage '{s}'") for s in ("prepare", "lego_phase1", "lego_hard_examples", "lego_phase2")]
    assert order == sorted(order)
    assert "coarse_sft" not in out  # not a dependency of the LEGO chain

    phase1 = stage_figures(repo, "lego_phase1")
    assert phase1["steps"] == 20 and phase1["train_tokens"] > 0 and phase1["val_ppl"] > 1

    hard = stage_figures(repo, "lego_hard_examples")
    path = repo / "data" / "lego_hard_examples" / "hard_examples.safetensors"
    assert hard["bytes"] == path.stat().st_size
    assert hard["train_rows"] == 150 and hard["train_rows_capped"]  # the params cap
    assert 0 < hard["val_rows"] <= 100
    with safe_open(str(path), framework="pt") as f:  # per-token pointers into their sequences
        assert f.get_tensor("train.seq").dtype == torch.int64
        assert f.get_tensor("train.pos").shape == (150,)

    phase2 = stage_figures(repo, "lego_phase2")
    keys = {"acc", "ppl", "shallow_ratio", "compute_cost", "baseline_ppl", "ppl_ratio", "em", "baseline_em"}
    assert keys | {"full_depth_ppl", "shallow_ppl", "threshold", "val_shallow_ratio"} <= set(phase2)
    layerskip = {"layerskip_ppl", "layerskip_full_depth_ppl", "layerskip_ppl_at_lego_share", "layerskip_em"}
    assert layerskip <= set(phase2)  # the LayerSkip-style baseline, routed by the same rule
    assert phase2["ppl_ratio"] == pytest.approx(phase2["ppl"] / phase2["baseline_ppl"])
    lego = LEGOTransformer.from_pretrained(str(repo / "models" / "lego"))
    assert phase2["compute_cost"] == pytest.approx(routed_compute_cost(lego.config, 2, phase2["shallow_ratio"]))
    # FLOP-matched baseline (the default budget): it stops at its token budget, overshooting by under a batch
    assert phase2["baseline_budget"] == "compute" and phase2["baseline_budget_tokens"] > 0
    assert 0 < phase2["baseline_train_tokens"] < phase2["baseline_budget_tokens"] + 8 * 64

    assert lego.config.depth == 4 and lego.config.exit_layer == 2
    assert lego.config.routing_threshold == pytest.approx(phase2["threshold"])
    baseline = LEGOTransformer.from_pretrained(str(repo / "models" / "lego_baseline"))
    assert baseline.config.exit_layers == [4]

    plots = repo / "plots" / "lego_phase2"
    val_rows = [line.split("\t") for line in (plots / "tradeoff_val.tsv").read_text().splitlines()]
    assert val_rows[0][:3] == ["threshold", "shallow_ratio", "compute_cost"] and len(val_rows) == 1 + 3
    ratio = val_rows[0].index("ppl_ratio_full")
    within = [float(r[0]) for r in val_rows[1:] if float(r[ratio]) <= 1.02]
    assert phase2["threshold"] == pytest.approx(min(within))  # the lowest threshold within 1.02x, on val
    assert len((plots / "tradeoff.tsv").read_text().splitlines()) == 1 + 3
    assert (plots / "exit_curve.png").stat().st_size > 0
    items = [json.loads(line) for line in (plots / "items.jsonl").read_text().splitlines()]
    assert items and {"id", "routed_nll", "routed_tokens", "baseline_nll", "correct", "baseline_correct"} <= set(
        items[0]
    )
    assert len(stage_runs(repo)) == 4
    assert "Running stage" not in dvc(project, "repro", "lego_phase2")
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-qm", "lego baseline"], repo, env)


def test_phase2_param_reruns_phase2_only(project):
    out = dvc(project, "exp", "run", "-S", "lego.phase2.max_epochs=3", "lego_phase2")
    assert "Running stage 'lego_phase2'" in out
    for upstream in ("prepare", "lego_phase1", "lego_hard_examples"):
        assert f"Running stage '{upstream}'" not in out


def test_bad_lego_param_fails_with_one_line(project):
    out = run_stage_with_edit(project, "lego_hard_examples.py", "hard_example_ratio: 0.5", "hard_example_ratio: 1.5")
    assert out.strip().splitlines()[-1] == (
        "error: params.yaml: lego.hard_examples.hard_example_ratio: must be less than 1 (got 1.5) "
        "— share of val response tokens whose exit confidence falls below the threshold"
    )
