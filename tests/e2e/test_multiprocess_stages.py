"""End to end: `launch.nproc: 2` runs coarse_sft (TRL) and hybrid_rnn (the LM trainer) under torchrun via dvc repro.

One model and one MLflow run per stage, and the same training curve as one process with the same global batch.
"""

import csv

import pytest
from e2e_project import TINY_COARSE, TINY_PREPARE, dvc, make_project, stage_runs

pytestmark = pytest.mark.slow

STAGES = ("coarse_sft", "hybrid_rnn")
TINY_HYBRID = {
    "model": {"preset": "tiny"},
    "train": {"max_steps": 40, "eval_steps": 20, "batch_size": 8, "logging_steps": 10, "warmup_steps": 2},
    "eval": {"batch_size": 64, "max_new_tokens": 6, "sample_predictions": 4, "num_beams": 2},
}
# Summing float gradients in another order is the only difference between the two runs.
TOLERANCE = 1e-3


def curve(repo, stage):
    with open(repo / "plots" / stage / "train.tsv") as handle:
        return [(int(float(row["step"])), float(row["loss"])) for row in csv.DictReader(handle, delimiter="\t")]


def test_two_processes_train_like_one_and_write_one_model_and_run(tmp_path):
    project = make_project(tmp_path, {"prepare": TINY_PREPARE, "coarse_sft": TINY_COARSE, "hybrid_rnn": TINY_HYBRID})
    repo, _ = project
    dvc(project, "repro", *STAGES)
    one_process = {stage: curve(repo, stage) for stage in STAGES}
    params = repo / "params.yaml"
    params.write_text(params.read_text().replace("launch:\n  nproc: 1\n", "launch:\n  nproc: 2\n", 1))
    out = dvc(project, "repro", *STAGES)
    for stage in STAGES:
        assert f"launching {stage}.py on 2 processes (launch.nproc)" in out
        assert (repo / "models" / ("coarse" if stage == "coarse_sft" else stage) / "model.safetensors").is_file()
        runs = stage_runs(repo, stage)
        assert sorted(run.data.tags["cascadelab.processes"] for run in runs) == ["1", "2"]  # one run per execution
        two_processes = curve(repo, stage)
        assert [step for step, _ in two_processes] == [step for step, _ in one_process[stage]]
        for (_, loss_two), (_, loss_one) in zip(two_processes, one_process[stage], strict=True):
            assert loss_two == pytest.approx(loss_one, rel=TOLERANCE)
