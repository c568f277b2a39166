"""RL/LM auto-mix: evenly spread RL steps, one logged decision per window with its reason, bounded share."""

from __future__ import annotations

from cascadelab.config import AutoMixParams
from cascadelab.training.sigma.rl_lm_mix import RLMix


def test_rl_steps_are_spread_evenly_at_the_share() -> None:
    mix = RLMix(AutoMixParams(initial_share=0.25, min_share=0.1, max_share=0.6))
    assert [mix.rl_due() for _ in range(8)] == [False, False, False, True] * 2


def test_each_window_moves_the_share_and_says_why() -> None:
    mix = RLMix(AutoMixParams(initial_share=0.3, min_share=0.1, max_share=0.4, step=0.1, min_gain=0.01))
    assert mix.decide(0, 0.10, 2.0) is None  # the first window only sets the reference
    steps = [(100, 0.20, 2.0), (200, 0.30, 2.0), (300, 0.30, 2.0), (400, 0.50, 2.5)]
    for step, reward, loss in steps:
        mix.decide(step, reward, loss)
    assert [(d.share_before, d.share_after, d.reason) for d in mix.decisions] == [
        (0.3, 0.4, "held-out reward rose 0.1000 -> 0.2000: more RL"),
        (0.4, 0.4, "held-out reward rose 0.2000 -> 0.3000: more RL (at the bound, unchanged)"),
        (0.4, 0.3, "held-out reward plateaued 0.3000 -> 0.3000: less RL"),
        (0.3, 0.2, "lm val loss rose 2.0000 -> 2.5000: back toward LM"),
    ]
    assert mix.changes == 3


def test_a_fixed_mix_never_decides_and_resumes_exactly() -> None:
    fixed = RLMix(AutoMixParams(), adaptive=False)
    fixed.decide(0, 0.1, 1.0)
    assert fixed.decide(100, 0.9, 1.0) is None and fixed.share == 0.3 and fixed.decisions == []
    mix = RLMix(AutoMixParams(initial_share=0.3))
    dues = [mix.rl_due() for _ in range(5)]
    copy = RLMix(AutoMixParams(initial_share=0.3))
    copy.load_state_dict(mix.state_dict())
    assert [copy.rl_due() for _ in range(7)] == [mix.rl_due() for _ in range(7)] and dues == [False] * 3 + [True, False]
