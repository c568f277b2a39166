"""RL/LM auto-mix: the share of loop steps that also take an RL update, moved by held-out progress.

Every loop step of `sigma_rl` is an LM update; a share ``s`` of them is followed by an RL update
(``rl_due`` spreads them evenly and deterministically: an accumulator gains ``s`` per step and an RL
update is due each time it passes 1). After every eval window `decide` compares the window's
held-out mean reward and LM val loss with the previous window's:

- LM val loss up by more than ``lm_loss_tolerance`` (relative): ``s -= step`` (back toward LM);
- held-out reward up by at least ``min_gain``: ``s += step`` (more RL while RL pays);
- otherwise (a plateau): ``s -= step``.

``s`` stays within ``[min_share, max_share]``. Every decision is recorded with its reason, whether or
not it moved the share; with the mix off the share stays at ``initial_share`` and nothing is decided.
With the Uroboros meta-loop on, its decision replaces this rule (`apply` with its delta and reason).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from cascadelab.config import AutoMixParams


@dataclass(frozen=True)
class MixDecision:
    """One window's verdict: the share before and after, and why."""

    step: int
    share_before: float
    share_after: float
    heldout_reward: float
    lm_val_loss: float
    reason: str


class RLMix:
    """Decides which loop steps also take an RL update, and adapts that share per eval window."""

    def __init__(self, settings: AutoMixParams, adaptive: bool = True) -> None:
        self.settings = settings
        self.adaptive = adaptive
        self.share = settings.initial_share
        self._credit = 0.0
        self.previous: tuple[float, float] | None = None  # (held-out reward, LM val loss) of the last window
        self.decisions: list[MixDecision] = []
        self.changes = 0

    def rl_due(self) -> bool:
        """Whether this loop step takes an RL update too (call once per step)."""
        self._credit += self.share
        if self._credit >= 1.0 - 1e-9:
            self._credit -= 1.0
            return True
        return False

    def decide(self, step: int, heldout_reward: float, lm_val_loss: float) -> MixDecision | None:
        """Move the share after an eval window (see module doc); None for the first window or with the mix off."""
        previous, self.previous = self.previous, (heldout_reward, lm_val_loss)
        if not self.adaptive or previous is None:
            return None
        s = self.settings
        last_reward, last_loss = previous
        if lm_val_loss > last_loss * (1.0 + s.lm_loss_tolerance):
            delta, reason = -s.step, f"lm val loss rose {last_loss:.4f} -> {lm_val_loss:.4f}: back toward LM"
        elif heldout_reward - last_reward >= s.min_gain:
            delta, reason = s.step, f"held-out reward rose {last_reward:.4f} -> {heldout_reward:.4f}: more RL"
        else:
            delta, reason = -s.step, f"held-out reward plateaued {last_reward:.4f} -> {heldout_reward:.4f}: less RL"
        return self.apply(step, delta, heldout_reward, lm_val_loss, reason)

    def apply(self, step: int, delta: float, heldout_reward: float, lm_val_loss: float, reason: str) -> MixDecision:
        """Move the share by `delta` (clipped to the bounds) and record the decision with `reason`."""
        s = self.settings
        self.previous = (heldout_reward, lm_val_loss)
        before = self.share
        self.share = round(min(max(before + delta, s.min_share), s.max_share), 6)
        if self.share != before:
            self.changes += 1
        elif delta:
            reason += " (at the bound, unchanged)"
        decision = MixDecision(step, before, self.share, heldout_reward, lm_val_loss, reason)
        self.decisions.append(decision)
        return decision

    def decision_rows(self) -> list[dict[str, Any]]:
        """Every decision as a plain row (for the TSV and the decisions log)."""
        return [asdict(d) for d in self.decisions]

    def state_dict(self) -> dict[str, Any]:
        """Share, accumulator, last window and decisions."""
        return {
            "share": self.share,
            "credit": self._credit,
            "previous": self.previous,
            "decisions": list(self.decisions),
            "changes": self.changes,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""
        self.share, self._credit, self.previous = state["share"], state["credit"], state["previous"]
        self.decisions, self.changes = list(state["decisions"]), state["changes"]


__all__ = ["MixDecision", "RLMix"]
