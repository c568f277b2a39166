"""sigma_rl's controls: the steering / reporting split, the per-item rows, the RL-minus-control effects, FLOPs."""

from __future__ import annotations

import pytest

from cascadelab.pipeline.sigma_rl_control import effect, effects, items, split_heldout, train_flops


def _records() -> list[dict]:
    return [{"id": f"m{i}", "task": "add"} for i in range(20)] + [{"id": f"c{i}", "task": "code"} for i in range(7)]


def test_steering_and_reporting_parts_are_disjoint_cover_both_kinds_and_follow_the_seed() -> None:
    steer, report = split_heldout(_records(), 0.5, seed=3)
    steer_ids, report_ids = {r["id"] for r in steer}, {r["id"] for r in report}
    assert not steer_ids & report_ids
    assert steer_ids | report_ids == {r["id"] for r in _records()}
    assert sum(r["task"] == "code" for r in steer) == 4 and sum(r["task"] == "code" for r in report) == 3
    assert sum(r["task"] == "add" for r in steer) == 10
    assert split_heldout(_records(), 0.5, seed=3) == (steer, report)
    assert split_heldout(_records(), 0.5, seed=4)[0] != steer


def test_a_kind_of_two_records_puts_one_on_each_side() -> None:
    steer, report = split_heldout([{"id": "a", "task": "code"}, {"id": "b", "task": "code"}], 0.9, seed=0)
    assert len(steer) == 1 and len(report) == 1


def test_effects_compare_rl_with_control_and_start_per_prompt_and_per_test_item() -> None:
    report = [{"id": i, "task": "add"} for i in range(40)]
    test = [{"id": i, "task": "add"} for i in range(10)]
    rewards = {"start": [0.0] * 40, "rl": [1.0] * 20 + [0.0] * 20, "control": [0.0] * 40}
    correct = {"start": [False] * 10, "rl": [True] * 5 + [False] * 5, "control": [True] * 5 + [False] * 5}
    rows = items(report, rewards, test, correct)
    assert rows[0] == {"id": "val:0", "split": "val_report", "task": "add", "start_reward": 0.0, "rl_reward": 1.0,
                       "control_reward": 0.0}  # fmt: skip
    assert rows[-1]["id"] == "test:9" and rows[-1]["control_correct"] is False
    out = effects(rows, seed=0)
    assert out["rl_vs_control_heldout_reward"] == pytest.approx(0.5)
    assert out["rl_vs_control_heldout_reward_low"] < 0.5 < out["rl_vs_control_heldout_reward_high"]
    assert out["rl_vs_control_em"] == 0.0 and out["rl_vs_control_em_low"] == out["rl_vs_control_em_high"] == 0.0
    assert out["rl_vs_start_em"] == pytest.approx(50.0) and out["rl_vs_start_em_low"] > 0
    assert "rl_vs_control_code_pass" not in out  # no code items


def test_an_identical_pair_has_a_zero_interval_and_flops_count_both_sides() -> None:
    assert effect([0.2, 0.4], [0.2, 0.4], seed=1) == {"effect": 0.0, "low": 0.0, "high": 0.0, "items": 2.0}
    assert train_flops(10, 100, 0, 1) == 6000.0
    assert train_flops(10, 100, 5, 2) == 6000.0 + 14 * 10 * 5
