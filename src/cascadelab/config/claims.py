"""The `claims` section: the threshold and direction that decide each seed claim, and the bootstrap settings.

Declared before the run: the `report` stage reads them and never tunes them. A claim *holds* when the
whole 95 % interval of its effect lies on the claimed side of its threshold, is *refuted* when the whole
interval lies on the other side (or touches the threshold), and is *inconclusive* when the interval
straddles the threshold or no interval can be computed.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from cascadelab.config.base import StrictModel

Direction = Literal["above", "below"]


class ClaimThreshold(StrictModel):
    """The threshold that decides one claim and the side of it the claimed effect must lie on."""

    threshold: float = Field(0.0, description="the effect this claim must beat, in the claim's unit")
    direction: Direction = Field("above", description="above: the effect must exceed the threshold; below: stay under")


def _claim(threshold: float, direction: Direction, description: str) -> Any:
    """A claim's field: its declared threshold and direction, described by the claim and its unit."""
    return Field(
        default_factory=lambda: ClaimThreshold(threshold=threshold, direction=direction), description=description
    )


class ClaimsParams(StrictModel):
    """The seed claims' thresholds (declared before the run) and the paired bootstrap over test items."""

    resamples: int = Field(2000, ge=100, description="paired bootstrap resamples of the test items per claim")
    confidence: float = Field(0.95, gt=0, lt=1, description="coverage of each effect's percentile interval")
    cascade_fixes_coarse_errors: ClaimThreshold = _claim(
        20.0, "above", "cascade (gated) minus coarse-only test EM, percentage points"
    )
    cascade_rarely_breaks: ClaimThreshold = _claim(
        2.0, "below", "share of coarse-right test items the gated cascade breaks, %"
    )
    cascade_beats_equal_compute: ClaimThreshold = _claim(
        10.0, "above", "cascade (gated) minus the equal-training-compute coarse_more control, test EM points"
    )
    reading_the_draft_helps: ClaimThreshold = _claim(
        0.0, "above", "always-refine minus the no-draft refiner alone (skip_coarse; same steps, data) test EM, points"
    )
    gate_saves_compute: ClaimThreshold = _claim(
        0.9, "below", "gated over always-refine generated tokens per test item (ratio)"
    )
    gate_keeps_accuracy: ClaimThreshold = _claim(
        -2.0, "above", "gated minus always-refine test EM, points (a non-inferiority margin)"
    )
    gate_matches_skip_coarse: ClaimThreshold = _claim(
        -2.0, "above", "gated minus skip_coarse (the no-draft refiner alone, no coarse pass) test EM, points"
    )
    lego_exits_early_at_little_loss: ClaimThreshold = _claim(
        1.02, "below", "LEGO routed (val-chosen threshold) over the FLOP-matched full-depth baseline's test ppl (ratio)"
    )
    growth_matches_static: ClaimThreshold = _claim(
        -1.0, "above", "ACOC study G minus L test EM at equal training FLOPs, points (non-inferiority)"
    )
    sigma_beats_llama: ClaimThreshold = _claim(
        1.0, "below", "SigmaLLM over the same-size Llama's test perplexity (ratio)"
    )
    bitlinear_costs_little: ClaimThreshold = _claim(
        1.05, "below", "BitLinear SigmaLLM over the same model in full precision, test perplexity (ratio)"
    )
    muon_needs_fewer_steps: ClaimThreshold = _claim(
        1.0, "below", "Muon-family over AdamW optimizer steps to the same validation loss (ratio)"
    )
    grpo_improves_heldout_reward: ClaimThreshold = _claim(
        0.0, "above", "held-out reward of sigma_rl minus its LM-only control (mean reward per reporting prompt)"
    )
    draft_heads_speed_up: ClaimThreshold = _claim(
        1.1, "above", "tokens per forward pass with the draft heads over plain decoding's 1 (ratio)"
    )
    hybrid_matches_transformer: ClaimThreshold = _claim(
        -2.0, "above", "hybrid RNN-Transformer minus the same-size coarse transformer's test EM, points"
    )


CLAIM_NAMES: tuple[str, ...] = tuple(
    name for name, info in ClaimsParams.model_fields.items() if info.annotation is ClaimThreshold
)
