"""Each stage's headline figures: the few DVC shows as its metrics; the rest of its science goes to a details file.

`pipeline.runtime.write_stage_metrics` writes the keys listed here to `metrics/<stage>.json` (what `dvc exp
show`, `dvc metrics diff` and `dvc.lock` see) and every other science figure (per-family and per-level
breakdowns, counters, diagnostics) to `plots/<stage>/details.json`, a plain output beside the stage's
`timing.json`. The headline keys are those a claim (`report/claim_defs.py`) or a leaderboard row
(`report/table.py`) turns on: the report reads all three files, so a key may move between them freely.
Nested figures are named by their dotted path (`acoc.em`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

HEADLINE: dict[str, tuple[str, ...]] = {
    "prepare": ("train_size", "vocab_size"),
    "coarse_sft": ("em", "test_ppl", "params"),
    "sigma_pretrain": ("sigma_test_ppl", "baseline_test_ppl", "sigma_em"),
    "sigma_rl": ("after_em", "rl_vs_control_heldout_reward", "draft_tokens_per_forward"),
    "lego_phase1": ("val_acc", "val_ppl"),
    "lego_hard_examples": ("threshold", "val_hard_share"),
    "lego_phase2": ("ppl", "baseline_ppl", "compute_cost", "shallow_ratio"),
    "hybrid_rnn": ("em", "test_ppl", "params"),
    "cascade_pairs": ("val_coarse_error", "train_balanced_pairs"),
    "limen": ("val_auroc", "val_ece", "val_approval_rate"),
    "refiner": ("val_refined_em", "val_control_em"),
    "cascade_eval": ("em_cascade", "em_skip_coarse", "break_rate_cascade", "draft_effect"),
    "acoc": ("arms.G.em", "arms.L.em", "bars.G_saving_median", "bars.G_beats_S_seeds"),
    "report": ("claims_holds", "claims_refuted", "claims_inconclusive"),
}


def keep_pattern() -> str:
    """A `dvc exp show --keep` regex matching every headline column (bare, or `metrics/<stage>.json:` where shared)."""
    keys = sorted({re.escape(key) for keys in HEADLINE.values() for key in keys})
    return rf"^(metrics/\w+\.json:)?({'|'.join(keys)})$"


def headline_keys(stage: str) -> tuple[str, ...]:
    """The dotted keys `stage` shows in its metrics file; ValueError for a stage the table does not list."""
    if stage not in HEADLINE:
        raise ValueError(f"{stage}: no headline keys declared (pipeline/headline.py HEADLINE)")
    return HEADLINE[stage]


def split_headline(stage: str, science: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(headline, details) of a stage's science figures, nested mappings split leaf by leaf, empty groups dropped."""
    return _split(science, frozenset(headline_keys(stage)), "")


def _split(figures: Mapping[str, Any], keys: frozenset[str], prefix: str) -> tuple[dict[str, Any], dict[str, Any]]:
    headline: dict[str, Any] = {}
    details: dict[str, Any] = {}
    for key, value in figures.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            inner_headline, inner_details = _split(value, keys, f"{name}.")
            if inner_headline:
                headline[key] = inner_headline
            if inner_details:
                details[key] = inner_details
        elif name in keys:
            headline[key] = value
        else:
            details[key] = value
    return headline, details


if __name__ == "__main__":  # `python -m cascadelab.pipeline.headline`: the regex `make exp-show` keeps
    print(keep_pattern())
