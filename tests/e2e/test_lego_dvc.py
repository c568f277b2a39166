"""End to end: the three LEGO stages under `dvc repro` in a temporary copy of the project, tiny params."""

import json

import pytest
import torch
from e2e_project import TINY_LEGO, TINY_PREPARE, dvc, make_project, run, run_stage_with_edit, stage_figures, stage_runs
from safetensors import safe_open

from cascadelab.models.lego import LEGOTransformer

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
    with safe_open(str(path), framework="pt") as f:
        assert f.get_tensor("train.hidden_states").dtype == torch.float16
        assert f.get_tensor("train.hidden_states").shape == (150, 32)

    phase2 = stage_figures(repo, "lego_phase2")
    assert {"acc", "ppl", "shallow_ratio", "compute_cost", "baseline_ppl", "ppl_ratio", "em", "baseline_em"} <= set(
        phase2
    )
    assert phase2["ppl_ratio"] == pytest.approx(phase2["ppl"] / phase2["baseline_ppl"])
    assert phase2["compute_cost"] == pytest.approx(0.5 + 0.5 * (1 - phase2["shallow_ratio"]))
    # Token-matched baseline (the default budget): LEGO's phase-1 tokens + its hard-example rows x epochs,
    # overshooting by less than one batch, or fewer if early stopping ends it first.
    assert phase2["baseline_budget_tokens"] == phase1["train_tokens"] + phase2["train_tokens"]
    assert 0 < phase2["baseline_train_tokens"] < phase2["baseline_budget_tokens"] + 8 * 16

    lego = LEGOTransformer.from_pretrained(str(repo / "models" / "lego"))
    assert lego.config.depth == 4 and lego.config.exit_layer == 2
    assert lego.config.routing_threshold == pytest.approx(phase2["threshold"])
    record = json.loads((repo / "models" / "lego" / "lego_training.json").read_text())
    assert record["phase2"]["learning_rate"] == pytest.approx(1e-3)  # from params, not the seed default 1e-4
    assert not hasattr(lego.config, "phase2_lr")  # the config holds the architecture only
    baseline = LEGOTransformer.from_pretrained(str(repo / "models" / "lego_baseline"))
    assert baseline.config.exit_layers == [4]

    tradeoff = (repo / "plots" / "lego_phase2" / "tradeoff.tsv").read_text().splitlines()
    assert tradeoff[0].split("\t")[:3] == ["exit_share", "threshold", "shallow_ratio"]
    assert len(tradeoff) == 1 + 3  # exit shares 0, 0.5 and 1
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
