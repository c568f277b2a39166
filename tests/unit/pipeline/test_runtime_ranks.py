"""`launch.nproc` in the stage runtime: which stages relaunch under torchrun, which refuse, and in what words."""

from pathlib import Path

import pytest
import yaml

from cascadelab.config import parse_params
from cascadelab.pipeline import runtime
from cascadelab.pipeline.runtime import RANK_AWARE_STAGES, SINGLE_PROCESS_STAGES, launch, stage_context

DVC = yaml.safe_load(Path("dvc.yaml").read_text(encoding="utf-8"))["stages"]


@pytest.fixture
def relaunches(monkeypatch):
    calls = []
    monkeypatch.setattr(runtime, "relaunch_under_torchrun", lambda nproc, script: calls.append((nproc, script)))
    return calls


def test_a_stage_that_is_not_rank_aware_refuses_to_start_under_a_launch(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    params = parse_params({})
    expected = (
        r"^limen: not rank-aware, run it on one process "
        r"\(launch.nproc applies to coarse_sft, hybrid_rnn, sigma_pretrain\)$"
    )
    with pytest.raises(ValueError, match=expected), stage_context("limen", params, params.limen):
        pass


def test_a_single_process_training_stage_refuses_several_processes_in_one_line(relaunches):
    expected = (
        r"^sigma_rl: runs on one process only, its GRPO loop samples and scores rollouts on one process; "
        r"set launch.nproc: 1$"
    )
    with pytest.raises(ValueError, match=expected):
        launch("sigma_rl", 2, "stages/sigma_rl.py")
    assert relaunches == []


def test_rank_aware_stages_relaunch_at_their_nproc_and_the_others_stay_on_one_process(relaunches):
    launch("sigma_pretrain", 2, "stages/sigma_pretrain.py")
    launch("cascade_pairs", 2, "stages/cascade_pairs.py")  # no training: nothing to split
    launch("acoc", 1, "stages/acoc.py")
    assert relaunches == [(2, "stages/sigma_pretrain.py"), (1, "stages/cascade_pairs.py"), (1, "stages/acoc.py")]


def test_every_stage_that_depends_on_launch_either_runs_data_parallel_or_refuses():
    depends = {stage for stage, spec in DVC.items() if "launch" in spec.get("params", [])}
    assert depends == set(RANK_AWARE_STAGES) | set(SINGLE_PROCESS_STAGES)
    assert not set(RANK_AWARE_STAGES) & set(SINGLE_PROCESS_STAGES)
