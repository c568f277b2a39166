"""Evaluation of ACOC runs: per-task validation loss and exact match, test exact match and perplexity.

Validation accuracy is teacher-forced sequence accuracy: a response counts when the argmax of every
response token (EOS included) is right, which is exactly when greedy decoding reproduces it, at the cost
of one forward pass. Test exact match generates greedily and asks the corpus verifier.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from cascadelab.data.batches import LMBatch
from cascadelab.eval.generation import generate_batched
from cascadelab.eval.metrics import response_perplexity

Record = dict[str, Any]
VerifyFn = Callable[[str, str, str], bool]


@torch.no_grad()
def evaluate_batches(model: PreTrainedModel, batches: Sequence[LMBatch]) -> dict[str, float]:
    """Token-mean loss and teacher-forced sequence accuracy over `batches`."""
    was_training = model.training
    model.eval()
    nll, tokens, right, rows = 0.0, 0, 0, 0
    for batch in batches:
        batch = batch.to(model.device)
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False).logits
        logits, labels = logits[:, :-1].float(), batch.labels[:, 1:]
        mask = labels != -100
        nll += float(
            torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100, reduction="sum"
            )
        )
        tokens += int(mask.sum())
        right += int(((logits.argmax(-1) == labels) | ~mask).all(-1).sum())
        rows += labels.shape[0]
    model.train(was_training)
    return {"loss": nll / max(tokens, 1), "acc": right / max(rows, 1)}


def evaluate_tasks(
    model: PreTrainedModel, val: Mapping[str, Sequence[LMBatch]], tasks: Sequence[str]
) -> dict[str, Any]:
    """Per-task `{"loss", "acc"}` and their means over `tasks`."""
    per_task = {task: evaluate_batches(model, val[task]) for task in tasks}
    return {
        "tasks": per_task,
        "loss": sum(r["loss"] for r in per_task.values()) / len(per_task),
        "acc": sum(r["acc"] for r in per_task.values()) / len(per_task),
    }


def exact_match(items: Sequence[Record], tasks: Sequence[str]) -> dict[str, float]:
    """Test exact match (%) over all of `test_items`' rows (`em`) and per task (`em_<task>`)."""
    hits = [float(item["correct"]) for item in items]
    metrics = {"em": 100.0 * sum(hits) / len(hits)}
    for task in tasks:
        task_hits = [float(item["correct"]) for item in items if item["task"] == task]
        metrics[f"em_{task}"] = 100.0 * (sum(task_hits) / len(task_hits))
    return metrics


def evaluate_test(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    records_by_task: Mapping[str, Sequence[Record]],
    items: Sequence[Record],
    batch_size: int = 256,
) -> dict[str, float]:
    """Exact match from `test_items`' rows (`em_<task>`, `em`) and response perplexity (`ppl_<task>`, `ppl`)."""
    tasks = list(records_by_task)
    metrics = exact_match(items, tasks)
    for task, records in records_by_task.items():
        metrics[f"ppl_{task}"] = response_perplexity(model, tokenizer, records, batch_size=batch_size)
    metrics["ppl"] = math.exp(sum(math.log(metrics[f"ppl_{t}"]) for t in tasks) / len(tasks))
    return metrics


def test_items(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    records_by_task: Mapping[str, Sequence[Record]],
    verify: VerifyFn,
    max_new_tokens: int,
    batch_size: int = 256,
) -> list[dict[str, Any]]:
    """Greedy exact match of every test record: `{"id", "task", "correct"}` in task order."""
    items: list[dict[str, Any]] = []
    for task, records in records_by_task.items():
        outputs = generate_batched(
            model, tokenizer, [r["prompt"] for r in records], max_new_tokens, batch_size=batch_size, desc=f"test {task}"
        )
        items += [
            {"id": r["id"], "task": task, "correct": verify(r["task"], out[0], r["answer"])}
            for r, out in zip(records, outputs, strict=True)
        ]
    return items
