"""End to end: `prepare` + `sigma_pretrain` under `dvc repro` in a temporary repository with tiny params."""

import json

import pytest
from e2e_project import TINY_PREPARE, TINY_SIGMA, client, dvc, make_project, stage_figures, stage_runs
from transformers import AutoModelForCausalLM

from cascadelab.io import read_tsv
from cascadelab.models.sigma import FEATURES, SigmaForCausalLM

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return make_project(tmp_path_factory.mktemp("sigma"), {"prepare": TINY_PREPARE, "sigma_pretrain": TINY_SIGMA})


def test_sigma_pretrain_stage_writes_model_metrics_curves_and_feature_log(project):
    repo, _ = project
    out = dvc(project, "repro", "sigma_pretrain")
    assert "Running stage 'prepare'" in out and "Running stage 'sigma_pretrain'" in out
    assert "Running stage 'coarse_sft'" not in out

    metrics = stage_figures(repo, "sigma_pretrain")
    for name in ("sigma", "baseline"):
        assert {f"{name}_test_ppl", f"{name}_em", f"{name}_em_add", f"{name}_params", f"{name}_train_tokens"} <= set(
            metrics
        )
    assert metrics["sigma_train_tokens"] == metrics["baseline_train_tokens"]  # same batches, same token budget
    assert metrics["ppl_ratio"] == pytest.approx(metrics["sigma_test_ppl"] / metrics["baseline_test_ppl"])
    assert metrics["param_gap"] <= 0.05
    assert metrics["sigma_feature_instant_effective_calls"] == 20

    model = AutoModelForCausalLM.from_pretrained(repo / "models" / "sigma")
    assert isinstance(model, SigmaForCausalLM)

    rows = [json.loads(line) for line in (repo / "runs" / "sigma_pretrain" / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [5, 10, 15, 20]
    last = rows[-1]
    assert {"phase_data_s", "phase_forward_s", "phase_backward_s", "phase_optimizer_s", "phase_eval_s"} <= set(last)
    assert last["core_tokens_per_s"] > 0 and "val_loss" in last
    for feature in FEATURES:
        calls = last[f"feature_{feature}_effective_calls"]
        assert calls > 0 if last[f"feature_{feature}_enabled"] else calls == 0, feature
    assert (repo / "runs" / "sigma_pretrain" / "baseline" / "metrics.jsonl").is_file()

    for name in ("sigma", "baseline"):
        curve = read_tsv(repo / "plots" / "sigma_pretrain" / f"{name}.tsv")
        assert [row["step"] for row in curve] == ["5", "10", "15", "20"]
        assert float(curve[-1]["loss"]) < float(curve[0]["loss"])

    (run,) = stage_runs(repo, "sigma_pretrain")
    assert "sigma/core_tokens_per_s" in run.data.metrics and "baseline/loss" in run.data.metrics
    assert run.data.metrics["sigma_test_ppl"] == pytest.approx(metrics["sigma_test_ppl"])
    artifacts = [a.path for a in client(repo).list_artifacts(run.info.run_id, "sigma_pretrain")]
    assert "sigma_pretrain/metrics.jsonl" in artifacts

    assert "Running stage" not in dvc(project, "repro", "sigma_pretrain")
