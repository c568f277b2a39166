"""Research log: cycles appended as whole JSON lines, read back in order, written through a rename."""

from __future__ import annotations

import json
import os

import pytest

from cascadelab.training.sigma.research_log import ResearchLog


def test_cycles_are_numbered_appended_and_read_back(tmp_path) -> None:
    log = ResearchLog(tmp_path / "runs" / "research.jsonl")
    assert log.cycles() == []
    first = log.record("more RL helps", {"rl_share": 0.6}, "reward +0.05", {"reward_delta": 0.07})
    second = log.record("lower lr stops the rise", "lr x0.5", "LM loss falls", {"lm_loss_delta": -0.02})
    assert first["cycle"] == 1 and second["cycle"] == 2
    assert log.cycles() == [first, second]
    assert ResearchLog(log.path).cycles() == [first, second]  # a fresh reader sees the same
    lines = log.path.read_text().splitlines()
    assert json.loads(lines[0]) == first
    assert lines[1] == json.dumps(second, sort_keys=True)
    assert log.effective_calls == 2


def test_a_record_replaces_the_file_by_rename_and_leaves_no_temporary(tmp_path) -> None:
    log = ResearchLog(tmp_path / "research.jsonl")
    log.record("h", "c", "e", 1.0)
    inode = os.stat(log.path).st_ino
    log.record("h2", "c2", "e2", 2.0)
    assert os.stat(log.path).st_ino != inode  # a new file renamed over the old: never a half-written line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["research.jsonl"]


def test_a_value_that_is_not_json_leaves_the_log_unchanged(tmp_path) -> None:
    log = ResearchLog(tmp_path / "research.jsonl")
    log.record("h", "c", "e", 1.0)
    before = log.path.read_bytes()
    with pytest.raises(ValueError, match="Out of range float values are not JSON compliant"):
        log.record("h", "c", "e", float("nan"))
    assert log.path.read_bytes() == before
    assert log.effective_calls == 1
