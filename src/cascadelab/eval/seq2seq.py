"""Encoder-decoder evaluation on corpus records: exact match overall and per task, perplexity, speed."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from cascadelab.data.seq2seq import collate_seq2seq, encode_source, encode_target, length_sorted_batches
from cascadelab.models.decoding import generate_kwargs

Decoding = Literal["greedy", "sample", "beam"]
Verify = Callable[[str, str, str], bool]
REQUIRED_KEYS = ("task", "prompt", "response", "answer")


@dataclass
class Seq2SeqEvalResult:
    """Exact match overall and per task, teacher-forced perplexity of the responses, decoding speed."""

    exact_match: float
    per_task: dict[str, float]
    perplexity: float
    tokens_per_s: float
    generated_tokens: int
    seconds: float
    n: int
    predictions: list[str] = field(default_factory=list)


def _check_records(records: Sequence[Mapping[str, Any]]) -> None:
    if not records:
        raise ValueError("no records to evaluate")
    for i, record in enumerate(records):
        missing = [key for key in REQUIRED_KEYS if key not in record]
        if missing:
            raise ValueError(f"record {i} lacks {', '.join(missing)}")


def _decoding_kwargs(
    decoding: Decoding, num_beams: int, temperature: float, top_k: int, top_p: float
) -> dict[str, Any]:
    if decoding == "greedy":
        return generate_kwargs(0.0, top_k, top_p, num_beams=1)
    if decoding == "beam":
        if num_beams < 2:
            raise ValueError(f"beam decoding needs num_beams >= 2, got {num_beams}")
        return generate_kwargs(0.0, top_k, top_p, num_beams)
    if decoding == "sample":
        if temperature <= 0:
            raise ValueError(f"sample decoding needs temperature > 0, got {temperature}")
        return generate_kwargs(temperature, top_k, top_p, num_beams=1)
    raise ValueError(f"decoding must be 'greedy', 'sample' or 'beam', got {decoding!r}")


@torch.no_grad()
def _perplexity(
    model: PreTrainedModel, encoded: Sequence[tuple[list[int], list[int]]], pad: int, batch_size: int
) -> float:
    total, count = 0.0, 0
    for idx in length_sorted_batches([len(s) + len(t) for s, t in encoded], batch_size):
        batch = collate_seq2seq([encoded[i][0] for i in idx], [encoded[i][1] for i in idx], pad)
        labels = cast(torch.Tensor, batch.labels).to(model.device)
        logits = model(
            input_ids=batch.input_ids.to(model.device),
            attention_mask=batch.attention_mask.to(model.device),
            labels=labels,
        ).logits
        total += float(F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), reduction="sum"))
        count += batch.num_target_tokens()
    return float(torch.tensor(total / max(count, 1)).exp())


@torch.no_grad()
def evaluate_seq2seq(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    records: Sequence[Mapping[str, Any]],
    decoding: Decoding,
    verify: Verify,
    *,
    batch_size: int = 64,
    max_new_tokens: int | None = None,
    num_beams: int = 4,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    seed: int = 0,
    perplexity: bool = True,
) -> Seq2SeqEvalResult:
    """Generate a response per record's `prompt` and score it with `verify(task, output, answer)`.

    Records need `task`, `prompt`, `response` and `answer`. Decoding is greedy, sampling (temperature,
    `top_k` 0 = off, `top_p` 1.0 = off; reproducible from `seed` without touching the caller's RNG) or
    beam search with `num_beams`. `max_new_tokens` defaults to the longest reference response + 8.
    Perplexity is teacher-forced on `response` + EOS (NaN with `perplexity=False`, which skips that pass);
    `tokens_per_s` counts generated tokens up to EOS.
    """
    _check_records(records)
    pad = tokenizer.pad_token_id
    if pad is None:
        raise ValueError("tokenizer has no pad token")
    kwargs = _decoding_kwargs(decoding, num_beams, temperature, top_k, top_p)
    eos = model.config.eos_token_id
    encoded = [
        (encode_source(tokenizer, str(r["prompt"])), encode_target(tokenizer, str(r["response"]))) for r in records
    ]
    if max_new_tokens is None:
        max_new_tokens = max(len(target) for _, target in encoded) + 8
        max_positions = getattr(model.config, "max_position_embeddings", None)
        if max_positions is not None:
            max_new_tokens = min(max_new_tokens, max_positions - 1)  # position 0 holds the start token
    was_training = model.training
    model.eval()
    outputs: list[str] = [""] * len(records)
    generated_tokens, seconds = 0, 0.0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for idx in length_sorted_batches([len(s) for s, _ in encoded], batch_size):
            batch = collate_seq2seq([encoded[i][0] for i in idx], None, pad)
            start = time.perf_counter()
            out = model.generate(  # type: ignore[operator]
                input_ids=batch.input_ids.to(model.device),
                attention_mask=batch.attention_mask.to(model.device),
                max_new_tokens=max_new_tokens,
                pad_token_id=pad,
                **kwargs,
            )
            seconds += time.perf_counter() - start
            new_tokens = out[:, 1:].cpu()  # drop the decoder start token
            for row, i in zip(new_tokens.tolist(), idx, strict=True):
                length = row.index(eos) + 1 if eos in row else len(row)
                generated_tokens += length
                outputs[i] = str(tokenizer.decode(row[:length], skip_special_tokens=True))
    ppl = _perplexity(model, encoded, pad, batch_size) if perplexity else float("nan")
    model.train(was_training)

    hits: dict[str, list[bool]] = defaultdict(list)
    for record, output in zip(records, outputs, strict=True):
        hits[str(record["task"])].append(bool(verify(str(record["task"]), output, str(record["answer"]))))
    all_hits = [hit for task_hits in hits.values() for hit in task_hits]
    return Seq2SeqEvalResult(
        exact_match=sum(all_hits) / len(all_hits),
        per_task={task: sum(h) / len(h) for task, h in sorted(hits.items())},
        perplexity=ppl,
        tokens_per_s=generated_tokens / seconds if seconds > 0 else 0.0,
        generated_tokens=generated_tokens,
        seconds=seconds,
        n=len(records),
        predictions=outputs,
    )
