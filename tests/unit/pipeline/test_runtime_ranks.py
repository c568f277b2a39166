"""A stage that is not rank-aware refuses, in one line, to start under a multi-process launch."""

import pytest

from cascadelab.config import parse_params
from cascadelab.pipeline.runtime import RANK_AWARE_STAGES, stage_context


def test_a_stage_that_is_not_rank_aware_refuses_several_processes(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    params = parse_params({})
    expected = r"^limen: not rank-aware, run it on one process \(launch.nproc applies to coarse_sft, hybrid_rnn\)$"
    with pytest.raises(ValueError, match=expected), stage_context("limen", params, params.limen):
        pass
    assert RANK_AWARE_STAGES == ("coarse_sft", "hybrid_rnn")
