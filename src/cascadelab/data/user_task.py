"""How the stages treat task `user` (a user's own rows, see user_dataset.py): mixes, skips, generation budgets.

`prepare` writes `meta["user"]` (weight, only, generation_margin) only when `prepare.user_dataset` is set,
so stages read these settings from the corpus they already depend on, and a corpus without user data
changes nothing here.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

from transformers import PreTrainedTokenizerBase

from cascadelab.data.batches import encode_texts

USER = "user"
GENERATED_ONLY = "it trains and evaluates the generated families only (coarse_sft trains and evaluates task user)"
logger = logging.getLogger("cascadelab.user")
_warned: set[str] = set()


def has_user(meta: Mapping[str, Any]) -> bool:
    """Whether the corpus holds a user dataset (task `user`)."""
    return USER in meta


def training_mix(mix: Mapping[str, float], meta: Mapping[str, Any]) -> dict[str, float]:
    """`mix` with task `user` joined at its share `meta["user"]["weight"]` (or alone with `only`).

    The other families keep their ratios; a mix that already names `user` is kept as it is (the user chose).
    """
    if not has_user(meta) or USER in mix:
        return dict(mix)
    settings = meta[USER]
    if settings["only"]:
        return {USER: 1.0}
    share, total = float(settings["weight"]), sum(mix.values())
    return {**{task: weight * (1 - share) / total for task, weight in mix.items()}, USER: share}


def skip_user(stage: str, records: Sequence[dict[str, Any]], why: str) -> list[dict[str, Any]]:
    """`records` without task `user`, saying in one warning line that `stage` skips it and why (if any)."""
    kept = [record for record in records if record["task"] != USER]
    if len(kept) < len(records) and stage not in _warned:  # one line per stage, not one per split
        _warned.add(stage)
        logger.warning("%s: skips task user: %s", stage, why)
    return kept


def user_generation_budget(
    tokenizer: PreTrainedTokenizerBase, train_records: Sequence[Mapping[str, Any]], meta: Mapping[str, Any]
) -> int:
    """New tokens a user item may generate: the longest user train response (+ EOS) times 1 + the margin; 0 if none."""
    responses = [str(record["response"]) for record in train_records if record["task"] == USER]
    if not responses:
        return 0
    longest = max(len(ids) for ids in encode_texts(tokenizer, responses)) + 1
    return math.ceil(longest * (1 + float(meta[USER]["generation_margin"])))


def answer_extraction_rate(
    records: Sequence[Mapping[str, Any]], outputs: Sequence[str], extract: Any, task: str = USER
) -> dict[str, float]:
    """`<task>_answer_extraction_rate`: the % of `task`'s outputs from which `extract` reads an answer ({} if none)."""
    found = [
        extract(output) is not None for record, output in zip(records, outputs, strict=True) if record["task"] == task
    ]
    return {f"{task}_answer_extraction_rate": 100.0 * sum(found) / len(found)} if found else {}
