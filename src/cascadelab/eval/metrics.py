"""Evaluation metrics shared by stages: exact match by task and difficulty, response perplexity."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from cascadelab.data.batches import collate_rows, encode_prompt_response

Record = dict[str, Any]
VerifyFn = Callable[[str, str, str], bool]


def exact_match_report(records: Sequence[Record], outputs: Sequence[str], verify: VerifyFn) -> dict[str, float]:
    """Exact-match accuracy overall, per task (`em_<task>`) and per cell (`em_<task><difficulty>`), in %."""
    if len(records) != len(outputs):
        raise ValueError(f"{len(records)} records but {len(outputs)} outputs")
    hits: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for record, output in zip(records, outputs, strict=True):
        ok = int(verify(record["task"], output, record["answer"]))
        for key in ("em", f"em_{record['task']}", f"em_{record['task']}{record['difficulty']}"):
            hits[key][0] += ok
            hits[key][1] += 1
    return {key: 100.0 * right / total for key, (right, total) in sorted(hits.items())}


def correct_items(records: Sequence[Record], outputs: Sequence[str], verify: VerifyFn) -> list[dict[str, Any]]:
    """One row per test item (id, task, correct): the per-item data paired claims bootstrap over."""
    if len(records) != len(outputs):
        raise ValueError(f"{len(records)} records but {len(outputs)} outputs")
    return [
        {"id": r["id"], "task": r["task"], "correct": verify(r["task"], o, r["answer"])}
        for r, o in zip(records, outputs, strict=True)
    ]


@torch.no_grad()
def response_nll_items(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    records: Sequence[Record],
    batch_size: int = 128,
    target_field: str = "response",
) -> list[tuple[float, int]]:
    """Per record, in record order: the summed NLL of its target tokens (plus EOS) given the prompt, and their count.

    Teacher-forced, in batches of similar length (less padding); kept per item so a perplexity or a ratio of
    perplexities can be bootstrapped over items.
    """
    model.eval()
    device = next(model.parameters()).device
    out: list[tuple[float, int]] = [(0.0, 0)] * len(records)
    order = sorted(range(len(records)), key=lambda i: len(records[i]["prompt"]) + len(records[i][target_field]))
    for start in range(0, len(order), batch_size):
        indices = order[start : start + batch_size]
        batch = [records[i] for i in indices]
        rows = encode_prompt_response(tokenizer, [r["prompt"] for r in batch], [r[target_field] for r in batch])
        padded = collate_rows(rows, int(tokenizer.pad_token_id)).to(device)
        logits = model(input_ids=padded.input_ids, attention_mask=padded.attention_mask).logits[:, :-1].float()
        targets = padded.labels[:, 1:]
        nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets, ignore_index=-100, reduction="none")
        for i, row_nll, row_tokens in zip(indices, nll.sum(dim=1), (targets != -100).sum(dim=1), strict=True):
            out[i] = (float(row_nll), int(row_tokens))
    return out


def response_perplexity(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    records: Sequence[Record],
    batch_size: int = 128,
    target_field: str = "response",
) -> float:
    """Perplexity of the target tokens (plus EOS) given the prompt, teacher-forced."""
    items = response_nll_items(model, tokenizer, records, batch_size, target_field)
    return math.exp(sum(nll for nll, _ in items) / max(sum(tokens for _, tokens in items), 1))
