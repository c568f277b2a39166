"""Uroboros meta-loop: after each evaluation window, adjust the learning rate and the RL/LM mix.

The seed names the loop but does not define it; this is cascadelab's. A window ends with its LM loss
ℓ and held-out reward R, compared with the previous window's ℓ⁻ and R⁻. The first matching rule decides:

1. no previous window:                          hold (lr factor 1, RL share Δ 0)
2. LM loss rose, ℓ > ℓ⁻ (1 + τ_ℓ):              lr factor f↓ and RL share −δ (RL is degrading the LM)
3. held-out reward rose, R − R⁻ ≥ τ_R:           lr factor 1, RL share +δ (RL is paying off: more of it)
4. otherwise (reward flat or fell):             lr factor 1, RL share −δ (back toward LM)

with τ_ℓ = ``lm_rise_tolerance`` (relative), τ_R = ``reward_rise_min`` (absolute), f↓ =
``lr_down_factor`` and δ = ``rl_share_step``. The cumulative learning-rate scale Π f stays ≥
``min_lr_scale``: at the floor, rule 2 returns the factor that reaches it (1 once there). The caller
applies the factor to its learning rate and the delta to its RL share (clipped to its own bounds).
Every decision carries a reason string naming the rule and the numbers, and the last ``history``
decisions are kept. `effective_calls` counts decisions.
"""

from __future__ import annotations

from collections import deque
from dataclasses import asdict, dataclass
from typing import Any

from cascadelab.config import check_settings


@dataclass(frozen=True)
class MetaLoopSettings:
    """Thresholds and step sizes of the meta-loop's rules."""

    lm_rise_tolerance: float = 0.02
    reward_rise_min: float = 0.01
    lr_down_factor: float = 0.5
    rl_share_step: float = 0.1
    min_lr_scale: float = 0.1
    history: int = 64

    def __post_init__(self) -> None:
        check_settings(
            "meta_loop",
            self,
            (
                ("lm_rise_tolerance", self.lm_rise_tolerance >= 0, ">= 0"),
                ("reward_rise_min", self.reward_rise_min >= 0, ">= 0"),
                ("lr_down_factor", 0 < self.lr_down_factor < 1, "in (0, 1)"),
                ("rl_share_step", 0 <= self.rl_share_step <= 1, "in [0, 1]"),
                ("min_lr_scale", 0 < self.min_lr_scale <= 1, "in (0, 1]"),
                ("history", self.history > 0, "> 0"),
            ),
        )


@dataclass(frozen=True)
class WindowOutcome:
    """What one evaluation window measured, with the previous window's values (None for the first)."""

    step: int
    lm_loss: float
    heldout_reward: float
    previous_lm_loss: float | None = None
    previous_heldout_reward: float | None = None


@dataclass(frozen=True)
class MetaDecision:
    """Multiply the learning rate by `lr_factor`, add `rl_share_delta` to the RL share, because `reason`."""

    lr_factor: float
    rl_share_delta: float
    reason: str


class MetaLoop:
    """Decides the learning-rate factor and RL-share change from each window's outcome."""

    def __init__(self, settings: MetaLoopSettings = MetaLoopSettings()) -> None:
        self.settings = settings
        self.lr_scale = 1.0  # product of the lr factors decided so far
        self.history: deque[dict[str, Any]] = deque(maxlen=settings.history)
        self._last: WindowOutcome | None = None
        self.effective_calls = 0

    def decide(self, window: WindowOutcome) -> MetaDecision:
        """Apply the rules to one window and record the decision."""
        decision = self._rule(window)
        self.lr_scale *= decision.lr_factor
        self.history.append({**asdict(window), **asdict(decision)})
        self._last = window
        self.effective_calls += 1
        return decision

    def observe(self, step: int, lm_loss: float, heldout_reward: float) -> MetaDecision:
        """`decide` on a window whose previous values are those of the last window seen."""
        last = self._last
        return self.decide(
            WindowOutcome(
                step,
                lm_loss,
                heldout_reward,
                None if last is None else last.lm_loss,
                None if last is None else last.heldout_reward,
            )
        )

    def _rule(self, w: WindowOutcome) -> MetaDecision:
        s = self.settings
        if w.previous_lm_loss is None or w.previous_heldout_reward is None:
            return MetaDecision(1.0, 0.0, f"step {w.step}: first window, no previous values: hold")
        rise = (w.lm_loss - w.previous_lm_loss) / abs(w.previous_lm_loss) if w.previous_lm_loss else 0.0
        gain = w.heldout_reward - w.previous_heldout_reward
        losses = f"LM loss {w.previous_lm_loss:.4g} -> {w.lm_loss:.4g} ({rise:+.1%})"
        rewards = f"held-out reward {w.previous_heldout_reward:.4g} -> {w.heldout_reward:.4g} ({gain:+.4g})"
        if rise > s.lm_rise_tolerance:
            factor = max(s.lr_down_factor, s.min_lr_scale / self.lr_scale)
            floor = " (lr scale at its floor)" if factor > s.lr_down_factor else ""
            return MetaDecision(
                min(factor, 1.0),
                -s.rl_share_step,
                f"step {w.step}: {losses} rose more than {s.lm_rise_tolerance:.1%}: "
                f"lr x{min(factor, 1.0):.4g}{floor}, RL share -{s.rl_share_step:g}",
            )
        if gain >= s.reward_rise_min:
            return MetaDecision(1.0, s.rl_share_step, f"step {w.step}: {rewards} rose: RL share +{s.rl_share_step:g}")
        trend = "fell" if gain < 0 else "plateaued"
        return MetaDecision(
            1.0,
            -s.rl_share_step,
            f"step {w.step}: {rewards} {trend} (< +{s.reward_rise_min:g}): "
            f"back toward LM, RL share -{s.rl_share_step:g}",
        )
