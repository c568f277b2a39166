"""Evaluation metrics shared by stages: exact match by task and difficulty, response perplexity."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

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


@torch.no_grad()
def response_perplexity(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    records: Sequence[Record],
    batch_size: int = 128,
    target_field: str = "response",
) -> float:
    """Perplexity of the target tokens (plus EOS) given the prompt, teacher-forced."""
    model.eval()
    device = next(model.parameters()).device
    total_nll, total_tokens = 0.0, 0
    order = sorted(range(len(records)), key=lambda i: len(records[i]["prompt"]) + len(records[i][target_field]))
    for start in range(0, len(order), batch_size):
        batch = [records[i] for i in order[start : start + batch_size]]
        ids, labels = [], []
        for record in batch:
            prompt = tokenizer(record["prompt"], add_special_tokens=False)["input_ids"]
            full = tokenizer(record["prompt"] + record[target_field], add_special_tokens=False)["input_ids"]
            full = [*full, tokenizer.eos_token_id]
            ids.append(full)
            labels.append([-100] * len(prompt) + full[len(prompt) :])
        width = max(len(x) for x in ids)
        pad = tokenizer.pad_token_id
        input_ids = torch.tensor([x + [pad] * (width - len(x)) for x in ids], device=device)
        attention = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in ids], device=device)
        label_ids = torch.tensor([x + [-100] * (width - len(x)) for x in labels], device=device)
        logits = model(input_ids=input_ids, attention_mask=attention).logits[:, :-1].float()
        targets = label_ids[:, 1:]
        nll = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100, reduction="sum"
        )
        total_nll += float(nll)
        total_tokens += int((targets != -100).sum())
    return math.exp(total_nll / max(total_tokens, 1))
