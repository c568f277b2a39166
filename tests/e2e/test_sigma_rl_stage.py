"""End to end: `prepare` + `sigma_pretrain` + `sigma_rl` under `dvc repro` in a temporary repository, tiny params."""

import json

import pytest
from e2e_project import TINY_PREPARE, TINY_SIGMA, client, dvc, make_project, stage_figures, stage_runs
from transformers import AutoModelForCausalLM

from cascadelab.io import read_tsv
from cascadelab.models.sigma import SigmaForCausalLM

pytestmark = pytest.mark.slow

PREPARE = {
    **TINY_PREPARE,
    "families": {**TINY_PREPARE["families"], "reverse": {"difficulties": [1]}},  # letters for the code prompts
    "code": {"enabled": True, "levels": [1], "sizes": {"train": 40, "val": 4, "test": 4}},
}
TINY_RL = {
    "train": {
        "max_steps": 10,
        "batch_size": 8,
        "logging_steps": 5,
        "eval_steps": 5,
        "eval_records": 16,
        "num_threads": 1,
        "checkpoint_steps": 0,
    },
    "mix": {"add": 0.4, "sub": 0.3, "code": 0.3},
    "grpo": {"prompts_per_step": 1, "num_generations": 2, "max_completion_length": 4},
    "auto_mix": {"initial_share": 0.4},
    "evolution": {"self_improver_problems": 4, "draft_steps": 5, "draft_prompts": 4},
    "eval": {"heldout_math": 8, "heldout_code": 4, "batch_size": 64, "max_new_tokens": 6, "sample_predictions": 2},
}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    overrides = {"prepare": PREPARE, "sigma_pretrain": TINY_SIGMA, "sigma_rl": TINY_RL}
    return make_project(tmp_path_factory.mktemp("sigma_rl"), overrides)


def test_sigma_rl_stage_writes_model_metrics_curves_and_rl_feature_log(project):
    repo, _ = project
    out = dvc(project, "repro", "sigma_rl")
    assert "Running stage 'sigma_pretrain'" in out and "Running stage 'sigma_rl'" in out
    assert sorted(p.name for p in (repo / "data" / "code_tasks").iterdir()) == [
        "meta.json",
        "test.jsonl",
        "train.jsonl",
        "val.jsonl",
    ]
    metrics = stage_figures(repo, "sigma_rl")
    for key in (
        "start_heldout_reward",
        "end_heldout_reward",
        "before_em",
        "after_em",
        "before_code_pass",
        "after_code_pass",
        "rl_steps",
        "lm_steps",
        "sandbox_isolation",
        "draft_tokens_per_forward",
    ):
        assert key in metrics, key
    timing = json.loads((repo / "plots" / "sigma_rl" / "timing.json").read_text())
    assert {"wall_seconds", "train_seconds", "draft_speedup", "phase_forward_s"} <= set(timing)
    assert not set(timing) & set(metrics)
    assert metrics["lm_steps"] == 10 and metrics["rl_steps"] >= 2
    assert isinstance(AutoModelForCausalLM.from_pretrained(repo / "models" / "sigma_rl"), SigmaForCausalLM)
    last = json.loads((repo / "runs" / "sigma_rl" / "metrics.jsonl").read_text().splitlines()[-1])
    for name in ("grpo", "verifier", "auto_mix", "meta_loop", "research_log", "draft_heads"):
        assert last[f"feature_{name}_enabled"] == 1 and last[f"feature_{name}_effective_calls"] > 0, name
    curve = read_tsv(repo / "plots" / "sigma_rl" / "reward.tsv")
    assert [row["step"] for row in curve] == ["0", "5", "10"]
    assert len(read_tsv(repo / "plots" / "sigma_rl" / "mix.tsv")) == 2
    (run,) = stage_runs(repo, "sigma_rl")
    assert run.data.metrics["end_heldout_reward"] == pytest.approx(metrics["end_heldout_reward"])
    artifacts = [a.path for a in client(repo).list_artifacts(run.info.run_id, "sigma_rl")]
    assert "sigma_rl/research_log.jsonl" in artifacts and "sigma_rl/metrics.jsonl" in artifacts
    assert "Running stage" not in dvc(project, "repro", "sigma_rl")
