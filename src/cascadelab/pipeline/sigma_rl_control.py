"""sigma_rl's controls: the steering / reporting split of the held-out prompts, per-item rows, effects, compute.

The meta-loop and the auto-mix steer on the steering part; the held-out reward the bar reads comes from the
reporting part only (disjoint, split per kind by a seeded shuffle). The RL run and the LM-only control are
compared per reporting prompt and per test item: `items` writes the rows `plots/sigma_rl/items.jsonl` holds,
`effect` gives the paired bootstrap interval of the RL-minus-control difference.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from cascadelab.data.code_tasks import TASK as CODE_TASK
from cascadelab.data.corpus import Record
from cascadelab.eval.bootstrap import paired_bootstrap

ARMS = ("start", "rl", "control")  # the model before sigma_rl, after it, and the LM-only control
RESAMPLES, CONFIDENCE = 2000, 0.95


def split_heldout(records: Sequence[Record], steer_fraction: float, seed: int) -> tuple[list[Record], list[Record]]:
    """Disjoint steering and reporting parts of the held-out records, split per kind (math, code) by a seeded shuffle.

    Each kind with at least two records puts at least one on each side.
    """
    rng = random.Random(f"{seed}:heldout-split")
    steer: list[Record] = []
    report: list[Record] = []
    for is_code in (False, True):
        group = [r for r in records if (r["task"] == CODE_TASK) == is_code]
        order = list(range(len(group)))
        rng.shuffle(order)
        k = round(len(group) * steer_fraction)
        if len(group) >= 2:
            k = min(max(k, 1), len(group) - 1)
        chosen = set(order[:k])
        steer += [r for i, r in enumerate(group) if i in chosen]
        report += [r for i, r in enumerate(group) if i not in chosen]
    return steer, report


def items(
    report: Sequence[Record],
    rewards: Mapping[str, Sequence[float]],
    test: Sequence[Record],
    correct: Mapping[str, Sequence[bool]],
) -> list[dict[str, Any]]:
    """Rows of items.jsonl: per reporting prompt each arm's reward, per test item each arm's correctness."""
    rows: list[dict[str, Any]] = [
        {"id": f"val:{r['id']}", "split": "val_report", "task": r["task"],
         **{f"{arm}_reward": float(rewards[arm][i]) for arm in rewards}}
        for i, r in enumerate(report)
    ]  # fmt: skip
    rows += [
        {"id": f"test:{r['id']}", "split": "test", "task": r["task"],
         **{f"{arm}_correct": bool(correct[arm][i]) for arm in correct}}
        for i, r in enumerate(test)
    ]  # fmt: skip
    return rows


def effect(system: Sequence[float], baseline: Sequence[float], seed: int, scale: float = 1.0) -> dict[str, float]:
    """Mean of `system` minus mean of `baseline` (times `scale`) with its paired bootstrap 95 % interval."""
    columns = {"system": np.asarray(system, dtype=np.float64), "baseline": np.asarray(baseline, dtype=np.float64)}
    interval = paired_bootstrap(
        columns, lambda m: scale * (m["system"] - m["baseline"]), RESAMPLES, CONFIDENCE, [seed, 21]
    )
    return {"effect": interval.estimate, "low": interval.low, "high": interval.high, "items": float(interval.items)}


def effects(rows: Sequence[Mapping[str, Any]], seed: int) -> dict[str, float]:
    """RL minus control and RL minus start: held-out reward (reporting part), math EM and code pass (points)."""
    out: dict[str, float] = {}
    report = [r for r in rows if r["split"] == "val_report"]
    math = [r for r in rows if r["split"] == "test" and r["task"] != CODE_TASK]
    code = [r for r in rows if r["split"] == "test" and r["task"] == CODE_TASK]
    for baseline in ("control", "start"):
        tables = (("heldout_reward", report, "reward", 1.0), ("em", math, "correct", 100.0),
                  ("code_pass", code, "correct", 100.0))  # fmt: skip
        for name, table, column, scale in tables:
            if not table or f"{baseline}_{column}" not in table[0]:
                continue
            system = [float(r[f"rl_{column}"]) for r in table]
            figures = effect(system, [float(r[f"{baseline}_{column}"]) for r in table], seed, scale)
            out.update({f"rl_vs_{baseline}_{name}{'' if k == 'effect' else '_' + k}": v for k, v in figures.items()})
    return out


def train_flops(params: int, lm_tokens: int, rl_tokens: int, num_iterations: int) -> float:
    """6 × parameters per LM token; per RL token 2 × parameters to generate and 6 × per update on it."""
    return 6.0 * params * lm_tokens + (2.0 + 6.0 * num_iterations) * params * rl_tokens


__all__ = ["ARMS", "effect", "effects", "items", "split_heldout", "train_flops"]
