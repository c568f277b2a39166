"""Evaluation of a causal LM on corpus records: greedy exact match, target perplexity, generation speed."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from cascadelab.data.corpus import CorpusVerifier
from cascadelab.data.user_task import USER, answer_extraction_rate
from cascadelab.eval.generation import generate_batched
from cascadelab.eval.metrics import exact_match_report, response_perplexity


def evaluate_lm(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    records: list[dict[str, Any]],
    verifier: CorpusVerifier,
    batch_size: int,
    max_new_tokens: int,
    target_field: str = "response",
    task_max_new_tokens: Mapping[str, int] | None = None,
) -> tuple[dict[str, float], list[str]]:
    """Greedy exact match (overall, per task and cell), target perplexity and generation speed.

    `task_max_new_tokens` gives some tasks their own generation budget (a user's worked solutions); their
    records are generated apart, and `user_answer_extraction_rate` joins the metrics when user items are present.
    """
    started = time.perf_counter()
    budgets = task_max_new_tokens or {}
    outputs = [""] * len(records)
    for budget in sorted({budgets.get(r["task"], max_new_tokens) for r in records}):
        group = [i for i, r in enumerate(records) if budgets.get(r["task"], max_new_tokens) == budget]
        prompts = [records[i]["prompt"] for i in group]
        for i, o in zip(
            group, generate_batched(model, tokenizer, prompts, budget, batch_size, desc="eval"), strict=True
        ):
            outputs[i] = o[0]
    seconds = time.perf_counter() - started
    metrics = exact_match_report(records, outputs, verifier.verify)
    if any(r["task"] == USER for r in records):
        metrics.update(answer_extraction_rate(records, outputs, verifier.for_task(USER).extract))
    metrics["test_ppl"] = response_perplexity(model, tokenizer, records, target_field=target_field)
    metrics["eval_sequences_per_s"] = len(records) / seconds if seconds else 0.0
    return metrics, outputs
