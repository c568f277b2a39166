"""Evaluation of a causal LM on corpus records: greedy exact match, target perplexity, generation speed."""

from __future__ import annotations

import time
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
) -> tuple[dict[str, float], list[str]]:
    """Greedy exact match (overall, per task and cell), target perplexity and generation speed.

    Every prompt gets the same `max_new_tokens` (generation reads no task label); `user_answer_extraction_rate`
    joins the metrics when user items are present.
    """
    started = time.perf_counter()
    prompts = [r["prompt"] for r in records]
    outputs = [o[0] for o in generate_batched(model, tokenizer, prompts, max_new_tokens, batch_size, desc="eval")]
    seconds = time.perf_counter() - started
    metrics = exact_match_report(records, outputs, verifier.verify)
    if any(r["task"] == USER for r in records):
        metrics.update(answer_extraction_rate(records, outputs, verifier.for_task(USER).extract))
    metrics["test_ppl"] = response_perplexity(model, tokenizer, records, target_field=target_field)
    metrics["eval_sequences_per_s"] = len(records) / seconds if seconds else 0.0
    return metrics, outputs
