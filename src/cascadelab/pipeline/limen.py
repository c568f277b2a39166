"""The `limen` stage's logic: fit the LIMEN gate on the train pairs, calibrate it, choose its threshold on val."""

from __future__ import annotations

from collections.abc import Sequence

from cascadelab.cascade.limen import run_limen
from cascadelab.config import LimenSettings
from cascadelab.pipeline.cascade_io import PAIR_SPLITS, StageOutcome, load_inputs, read_pairs
from cascadelab.pipeline.paths import Paths


def run(settings: LimenSettings, seed: int, paths: Paths) -> StageOutcome:
    """Fit LIMEN on the train pairs, calibrate it and choose its threshold on val; save it to `paths.limen`.

    `seed` is unused: the fit draws nothing at random.
    """
    inputs = load_inputs(paths.corpus, paths.coarse, settings.num_threads)
    train, val = (read_pairs(paths.cascade_pairs, split) for split in PAIR_SPLITS)
    outcome = run_limen(inputs.coarse, inputs.tokenizer, inputs.verifier, train, val, settings, paths.limen)
    greedy = [p for p in val if p.get("source", "greedy") == "greedy"] or val
    intentions = outcome.limen.create_intentions(
        [p["prompt"] for p in greedy], [p["coarse"] for p in greedy], "coarse", [p["task"] for p in greedy]
    )
    tension = outcome.limen.tensions(intentions).tolist()
    wrong = [not p["coarse_correct"] for p in greedy]
    curves = {"reliability": reliability_rows(tension, wrong, settings.ece_bins)}
    return StageOutcome(dict(outcome.metrics), curves)


def reliability_rows(tension: Sequence[float], wrong: Sequence[bool], bins: int) -> list[dict[str, float]]:
    """Reliability diagram: per tension bin, the mean predicted P(wrong), the observed wrong rate, the count."""
    rows = []
    for b in range(bins):
        low, high = b / bins, (b + 1) / bins
        inside = [i for i, t in enumerate(tension) if low <= t < high or (b == bins - 1 and t == 1.0)]
        if inside:
            rows.append(
                {
                    "predicted": sum(tension[i] for i in inside) / len(inside),
                    "observed": sum(wrong[i] for i in inside) / len(inside),
                    "count": float(len(inside)),
                }
            )
    return rows
