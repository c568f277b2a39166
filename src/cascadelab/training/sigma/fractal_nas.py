"""Fractal NAS: short trials of structural SIGMA variants, a coarse round then finer rounds around the best.

Fractal NAS has no public definition; this is cascadelab's. A variant is a point x on four axes, each an
offset from the base `SigmaConfig`:

- ``width``   w: hidden_size ≈ h₀·2^w (and both MoE intermediate sizes by the same realised ratio),
  rounded to a multiple that keeps ``ssm_expand · hidden_size`` divisible by ``ssm_head_dim``;
- ``depth``   d: num_hidden_layers = max(1, round(L₀·2^d));
- ``mix``     m: the attention share a = a₀ + m/8 in eighths, clipped to [0, 1], written as
  ``mamba_ratio : attention_ratio = (8 − 8a) : 8a`` (reduced), so the MLA layers are spread evenly;
- ``experts`` e: moe_num_routed_experts = max(top_k, round(E₀·2^e)) (off when the base is dense).

Round r uses the step s_r = 2^−r per axis (``mix`` in units of 2 eighths): round 0 (coarse) samples
``coarse_trials`` points of the grid {−s₀, 0, +s₀}⁴, always with the centre (the base); round r ≥ 1 (finer)
takes the best point of round r − 1 and its 2·4 neighbours x ± s_r·e_axis, one axis at a time: the same
pattern at half the scale around the winner, hence "fractal". Variants that round to the same config
are trained once. Round r trains every variant for ``coarse_steps · budget_growth^r`` steps with
``train_and_eval(config, steps) -> (val_loss, compute)``.

Score (lower is better), validation loss against compute per step relative to the base config:

    score = val_loss + λ · log₂( (compute / steps) / (compute₀ / steps₀) )

so a variant that doubles the compute must lower the validation loss by more than λ
(``compute_penalty``, nats per doubling) to rank above one that does not. Variants are ranked within a
round (same budget); the winner is the best of the last round. It is reported in `NASResult` (and, with
a parent run, as tags on it), never applied to any config: ``adopted`` is always False. With a
parent `StageRun`, every trial is an MLflow child run (params: the point, overrides, steps; metrics:
val_loss, compute, score) through :func:`cascadelab.tracking.log_child_run`.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from cascadelab.config import check_settings
from cascadelab.data.batches import Batch
from cascadelab.models.sigma import SigmaConfig, SigmaForCausalLM, apply_instant_plan
from cascadelab.tracking import StageRun, log_child_run
from cascadelab.training.schedules import constant_schedule
from cascadelab.training.trainer import LMTrainer, StepSettings, mean_loss

AXES = ("width", "depth", "mix", "experts")
TrainAndEval = Callable[[SigmaConfig, int], tuple[float, float]]
_MIX_UNIT = 2  # eighths of attention share per coarse step


@dataclass(frozen=True)
class NASSettings:
    """Search shape and budgets of fractal NAS."""

    axes: tuple[str, ...] = AXES
    rounds: int = 2
    coarse_trials: int = 8
    coarse_steps: int = 30
    budget_growth: float = 2.0
    compute_penalty: float = 0.05
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = sorted(set(self.axes) - set(AXES))
        if not self.axes or unknown:
            raise ValueError(f"fractal_nas.axes: unknown or empty {unknown}; known: {', '.join(AXES)}")
        check_settings(
            "fractal_nas",
            self,
            (
                ("rounds", self.rounds >= 1, ">= 1"),
                ("coarse_trials", self.coarse_trials >= 1, ">= 1"),
                ("coarse_steps", self.coarse_steps >= 1, ">= 1"),
                ("budget_growth", self.budget_growth >= 1, ">= 1"),
                ("compute_penalty", self.compute_penalty >= 0, ">= 0"),
            ),
        )

    def steps(self, round_index: int) -> int:
        """Training steps of every trial in round `round_index`."""
        return max(1, round(self.coarse_steps * self.budget_growth**round_index))


@dataclass(frozen=True)
class NASTrial:
    """One trained variant: where it sits, what it changed, its budget and its figures."""

    round: int
    index: int
    point: dict[str, float]
    overrides: dict[str, Any]
    steps: int
    val_loss: float
    compute: float
    score: float
    run_id: str | None = None


@dataclass
class NASResult:
    """All trials, the base trial and the winner (reported, never adopted)."""

    trials: list[NASTrial]
    base: NASTrial
    winner: NASTrial
    adopted: bool = False
    ranking: list[list[int]] = field(default_factory=list)  # per round: trial indices, best first

    @property
    def effective_calls(self) -> int:
        """Trials actually trained (the trainer's `feature_fractal_nas_effective_calls`)."""
        return len(self.trials)

    @property
    def total_steps(self) -> int:
        """Training steps spent over all trials."""
        return sum(trial.steps for trial in self.trials)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        return {
            "trials": [asdict(t) for t in self.trials],
            "base": asdict(self.base),
            "winner": asdict(self.winner),
            "adopted": self.adopted,
            "ranking": self.ranking,
            "effective_calls": self.effective_calls,
            "total_steps": self.total_steps,
        }


def _round_to(value: float, multiple: int) -> int:
    return max(multiple, multiple * round(value / multiple))


def variant_overrides(base: SigmaConfig, point: Mapping[str, float]) -> dict[str, Any]:
    """The SigmaConfig fields that `point` changes (empty for the centre)."""
    out: dict[str, Any] = {}
    w = point.get("width", 0.0)
    if w:
        multiple = base.ssm_head_dim // math.gcd(base.ssm_head_dim, base.ssm_expand)
        hidden = _round_to(base.hidden_size * 2**w, multiple)
        ratio = hidden / base.hidden_size
        out["hidden_size"] = hidden
        out["moe_intermediate_size"] = _round_to(base.moe_intermediate_size * ratio, 8)
        out["moe_shared_intermediate_size"] = _round_to(base.moe_shared_intermediate_size * ratio, 8)
    d = point.get("depth", 0.0)
    if d:
        out["num_hidden_layers"] = max(1, round(base.num_hidden_layers * 2**d))
    m = point.get("mix", 0.0)
    if m:
        share = base.attention_ratio / (base.mamba_ratio + base.attention_ratio)
        eighths = min(8, max(0, round(share * 8 + m * _MIX_UNIT)))
        divisor = math.gcd(8 - eighths, eighths)
        out["mamba_ratio"], out["attention_ratio"] = (8 - eighths) // divisor, eighths // divisor
    e = point.get("experts", 0.0)
    if e and base.moe_num_routed_experts:
        out["moe_num_routed_experts"] = max(base.moe_top_k, round(base.moe_num_routed_experts * 2**e))
    return {key: value for key, value in out.items() if getattr(base, key) != value}


def variant_config(base: SigmaConfig, overrides: Mapping[str, Any]) -> SigmaConfig:
    """A new SigmaConfig: `base` with `overrides`, the block pattern recomputed from the ratios."""
    fields = {**base.to_dict(), **overrides}
    fields["attn_layer_idx"] = None
    return SigmaConfig.from_dict(fields)


def _coarse_points(settings: NASSettings) -> list[dict[str, float]]:
    offsets = itertools.product((-1.0, 0.0, 1.0), repeat=len(settings.axes))
    grid = [dict(zip(settings.axes, point, strict=True)) for point in offsets]
    centre = dict.fromkeys(settings.axes, 0.0)
    others = [p for p in grid if p != centre]
    random.Random(f"{settings.seed}:fractal_nas").shuffle(others)
    return [centre, *others[: settings.coarse_trials - 1]]


def _fine_points(settings: NASSettings, centre: Mapping[str, float], round_index: int) -> list[dict[str, float]]:
    step = 2.0**-round_index
    points = [dict(centre)]
    for axis in settings.axes:
        for sign in (-1.0, 1.0):
            points.append({**centre, axis: centre[axis] + sign * step})
    return points


def run_nas(
    base_config: SigmaConfig,
    settings: NASSettings,
    train_and_eval: TrainAndEval,
    tracking_parent: StageRun | None = None,
) -> NASResult:
    """Coarse round, then finer rounds around each round's best; every trial trained, scored and reported."""
    trials: list[NASTrial] = []
    ranking: list[list[int]] = []
    reference: float | None = None  # compute per step of the base config
    points = _coarse_points(settings)
    for round_index in range(settings.rounds):
        steps = settings.steps(round_index)
        seen: set[str] = set()
        in_round: list[NASTrial] = []
        for point in points:
            overrides = variant_overrides(base_config, point)
            key = repr(sorted(overrides.items()))
            if key in seen:
                continue
            seen.add(key)
            val_loss, compute = train_and_eval(variant_config(base_config, overrides), steps)
            if reference is None:
                reference = compute / steps  # the first trial of round 0 is the base
            score = float(val_loss) + settings.compute_penalty * math.log2(max(compute / steps, 1e-30) / reference)
            trial = NASTrial(
                round_index, len(trials), dict(point), overrides, steps, float(val_loss), float(compute), score
            )
            if tracking_parent is not None:
                trial = _logged(tracking_parent, trial)
            trials.append(trial)
            in_round.append(trial)
        ordered = sorted(in_round, key=lambda t: (t.score, t.index))
        ranking.append([t.index for t in ordered])
        if round_index + 1 < settings.rounds:
            points = _fine_points(settings, ordered[0].point, round_index + 1)
    winner = trials[ranking[-1][0]]
    result = NASResult(trials, trials[0], winner, adopted=False, ranking=ranking)
    if tracking_parent is not None:
        tracking_parent.client.set_tag(tracking_parent.run_id, "fractal_nas.winner", repr(winner.overrides))
        tracking_parent.client.set_tag(tracking_parent.run_id, "fractal_nas.adopted", "false")
    return result


def _logged(parent: StageRun, trial: NASTrial) -> NASTrial:
    run_id = log_child_run(
        parent,
        f"nas r{trial.round} t{trial.index}",
        params={"round": trial.round, "steps": trial.steps, "point": trial.point, "overrides": trial.overrides},
        metrics={"val_loss": trial.val_loss, "compute": trial.compute, "score": trial.score},
        role="nas_trial",
    )
    return NASTrial(**{**asdict(trial), "run_id": run_id})


def active_parameters(model: SigmaForCausalLM) -> float:
    """Parameters used per token: routed experts count at top_k / num_experts, tied weights once."""
    config = model.config
    share = config.moe_top_k / config.moe_num_routed_experts if config.moe_num_routed_experts else 1.0
    seen: set[int] = set()
    total = 0.0
    for name, parameter in model.named_parameters():
        if id(parameter) in seen:
            continue
        seen.add(id(parameter))
        total += parameter.numel() * (share if ".ffn.experts." in name else 1.0)
    return total


def sigma_trial(
    train_batches: Sequence[Batch],
    val_batches: Iterable[Batch],
    learning_rate: float = 1e-3,
    seed: int = 0,
) -> TrainAndEval:
    """A `train_and_eval` for SIGMA: AdamW on the cycled batches; val loss and compute 6 · N_active · tokens."""
    val = list(val_batches)

    def train_and_eval(config: SigmaConfig, steps: int) -> tuple[float, float]:
        torch.manual_seed(seed)
        model = apply_instant_plan(SigmaForCausalLM(config), checkpoint_blocks=False).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate)
        loop = StepSettings(max_steps=steps, max_grad_norm=1.0, logging_steps=steps)
        trainer = LMTrainer(model, [optimizer], loop, None, compute_loss=_trial_loss, schedule=constant_schedule)
        batches = [train_batches[step % len(train_batches)] for step in range(steps)]
        try:
            result = trainer.fit(batches)
        except FloatingPointError:  # a variant that diverges loses the search; it does not end it
            tokens = sum(batch["input_ids"].numel() for batch in batches)
            return math.inf, 6.0 * active_parameters(model) * tokens
        return mean_loss(model, val), 6.0 * active_parameters(model) * result.train_tokens

    return train_and_eval


def _trial_loss(model: SigmaForCausalLM, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
    """The LM loss of a trial step; `tokens`: every position of the batch, padding included (the compute's count)."""
    return model(**batch).loss, {"tokens": batch["input_ids"].numel()}
