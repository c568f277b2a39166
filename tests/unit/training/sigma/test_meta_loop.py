"""Uroboros meta-loop: exact decisions and reasons on hand-made window sequences."""

from __future__ import annotations

import pytest

from cascadelab.training.sigma.meta_loop import MetaDecision, MetaLoop, MetaLoopSettings, WindowOutcome


def test_each_rule_gives_its_decision_and_reason() -> None:
    loop = MetaLoop()
    assert loop.decide(WindowOutcome(100, 1.0, 0.2)) == MetaDecision(
        1.0, 0.0, "step 100: first window, no previous values: hold"
    )
    assert loop.decide(WindowOutcome(200, 1.0, 0.3, 1.0, 0.2)) == MetaDecision(
        1.0, 0.1, "step 200: held-out reward 0.2 -> 0.3 (+0.1) rose: RL share +0.1"
    )
    assert loop.decide(WindowOutcome(300, 1.1, 0.4, 1.0, 0.3)) == MetaDecision(
        0.5, -0.1, "step 300: LM loss 1 -> 1.1 (+10.0%) rose more than 2.0%: lr x0.5, RL share -0.1"
    )
    assert loop.decide(WindowOutcome(400, 1.1, 0.405, 1.1, 0.4)) == MetaDecision(
        1.0, -0.1, "step 400: held-out reward 0.4 -> 0.405 (+0.005) plateaued (< +0.01): back toward LM, RL share -0.1"
    )
    assert loop.decide(WindowOutcome(500, 1.0, 0.3, 1.1, 0.405)) == MetaDecision(
        1.0, -0.1, "step 500: held-out reward 0.405 -> 0.3 (-0.105) fell (< +0.01): back toward LM, RL share -0.1"
    )
    assert loop.effective_calls == 5
    assert loop.lr_scale == 0.5
    assert [entry["step"] for entry in loop.history] == [100, 200, 300, 400, 500]
    assert loop.history[2]["lr_factor"] == 0.5 and loop.history[2]["lm_loss"] == 1.1


def test_a_small_loss_rise_within_tolerance_is_not_a_rise() -> None:
    loop = MetaLoop()
    decision = loop.decide(WindowOutcome(10, 1.01, 0.5, 1.0, 0.4))  # +1 % < 2 %, reward +0.1
    assert (decision.lr_factor, decision.rl_share_delta) == (1.0, 0.1)


def test_observe_fills_previous_values_from_the_last_window() -> None:
    loop = MetaLoop()
    loop.observe(1, 2.0, 0.1)
    assert loop.observe(2, 2.0, 0.5).rl_share_delta == 0.1
    assert loop.observe(3, 3.0, 0.9).lr_factor == 0.5
    assert loop.history[-1]["previous_lm_loss"] == 2.0 and loop.history[-1]["previous_heldout_reward"] == 0.5


def test_lr_scale_stops_at_its_floor_and_history_is_bounded() -> None:
    loop = MetaLoop(MetaLoopSettings(min_lr_scale=0.1, history=3))
    factors = []
    loss = 1.0
    for step in range(6):
        factors.append(loop.decide(WindowOutcome(step, loss * 2, 0.0, loss, 0.0)).lr_factor)
        loss *= 2
    assert factors[:3] == [0.5, 0.5, 0.5]
    assert factors[3] == pytest.approx(0.8)  # 0.125 * 0.8 = the 0.1 floor
    assert factors[4:] == [1.0, 1.0]
    assert loop.lr_scale == pytest.approx(0.1)
    assert loop.history[-1]["reason"].endswith("lr x1 (lr scale at its floor), RL share -0.1")
    assert [entry["step"] for entry in loop.history] == [3, 4, 5]


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match=r"meta_loop.lr_down_factor: must be in \(0, 1\), got 1.5"):
        MetaLoopSettings(lr_down_factor=1.5)
    with pytest.raises(ValueError, match=r"meta_loop\.history: must be > 0, got 0"):
        MetaLoopSettings(history=0)
