"""End to end: `launch.nproc: 2` runs coarse_sft (TRL), hybrid_rnn and sigma_pretrain (the LM trainer) under torchrun.

One model and one MLflow run per stage, and the same training curves as one process with the same global batch.
"""

import csv

import pytest
from e2e_project import TINY_COARSE, TINY_PREPARE, TINY_SIGMA, dvc, make_project, stage_runs

pytestmark = pytest.mark.slow

STAGES = ("coarse_sft", "hybrid_rnn", "sigma_pretrain")
# The training curve(s) of each stage (plots/<stage>/<name>.tsv) and the model folder it writes.
CURVES = {"coarse_sft": ("train",), "hybrid_rnn": ("train",), "sigma_pretrain": ("sigma", "baseline")}
MODELS = {"coarse_sft": "coarse", "hybrid_rnn": "hybrid_rnn", "sigma_pretrain": "sigma"}
TINY_HYBRID = {
    "model": {"preset": "tiny"},
    "train": {"max_steps": 40, "eval_steps": 20, "batch_size": 8, "logging_steps": 10, "warmup_steps": 2},
    "eval": {"batch_size": 64, "max_new_tokens": 6, "sample_predictions": 4, "num_beams": 2},
}
# Summing float gradients in another order is the only difference between the two runs.
TOLERANCE = 1e-3


def curve(repo, stage, name):
    with open(repo / "plots" / stage / f"{name}.tsv") as handle:
        rows = csv.DictReader(handle, delimiter="\t")
        return [(int(float(row["step"])), float(row["loss"])) for row in rows if row["loss"]]


def test_two_processes_train_like_one_and_write_one_model_and_run(tmp_path):
    tiny = {"prepare": TINY_PREPARE, "coarse_sft": TINY_COARSE, "hybrid_rnn": TINY_HYBRID, "sigma_pretrain": TINY_SIGMA}
    project = make_project(tmp_path, tiny)
    repo, _ = project
    dvc(project, "repro", *STAGES)
    one_process = {(stage, name): curve(repo, stage, name) for stage in STAGES for name in CURVES[stage]}
    params = repo / "params.yaml"
    params.write_text(params.read_text().replace("launch:\n  nproc: 1\n", "launch:\n  nproc: 2\n", 1))
    out = dvc(project, "repro", *STAGES)
    for stage in STAGES:
        assert f"launching {stage}.py on 2 processes (launch.nproc)" in out
        assert (repo / "models" / MODELS[stage] / "model.safetensors").is_file()
        runs = stage_runs(repo, stage)
        assert sorted(run.data.tags["cascadelab.processes"] for run in runs) == ["1", "2"]  # one run per execution
        for name in CURVES[stage]:
            two_processes, one = curve(repo, stage, name), one_process[stage, name]
            assert two_processes and [step for step, _ in two_processes] == [step for step, _ in one]
            for (_, loss_two), (_, loss_one) in zip(two_processes, one, strict=True):
                assert loss_two == pytest.approx(loss_one, rel=TOLERANCE)
