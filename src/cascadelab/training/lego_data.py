"""Corpus records as LEGO batches: prompt + response + EOS token ids, loss on the response only.

Each record becomes ``prompt_ids + response_ids + [eos]`` (prompt and response encoded separately, so
the response tokens are exactly those ``generate`` continues a prompt with), with labels aligned to
the inputs and -100 on the prompt and on padding: the LEGO library shifts them itself. Batches are
right-padded and hold one (task, difficulty) cell each, so short arithmetic items are never padded
to word-problem length.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from cascadelab.models.lego.modeling_lego import IGNORE_INDEX

Batch = dict[str, torch.Tensor]


@dataclass(frozen=True)
class EncodedRecord:
    """Token ids of one record and how many of them are prompt."""

    cell: str
    input_ids: tuple[int, ...]
    prompt_len: int


def encode_records(records: Sequence[dict[str, Any]], tokenizer: PreTrainedTokenizerBase) -> list[EncodedRecord]:
    """Encode ``prompt`` and ``response`` of each record (no special tokens) and append EOS."""
    if tokenizer.eos_token_id is None or tokenizer.pad_token_id is None:
        raise ValueError("tokenizer: needs eos and pad tokens")
    if not records:
        return []
    prompts = _encode_texts(tokenizer, [r["prompt"] for r in records])
    responses = _encode_texts(tokenizer, [r["response"] for r in records])
    out = []
    for record, prompt, response in zip(records, prompts, responses, strict=True):
        if not prompt:
            raise ValueError(f"record {record.get('id', '?')}: empty prompt")
        out.append(
            EncodedRecord(
                cell=f"{record['task']}{record.get('difficulty', '')}",
                input_ids=(*prompt, *response, int(tokenizer.eos_token_id)),
                prompt_len=len(prompt),
            )
        )
    return out


def _encode_texts(tokenizer: PreTrainedTokenizerBase, texts: list[str]) -> list[list[int]]:
    """Token ids of each text without special tokens (straight through the Rust tokenizer when fast)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:  # same ids, without building a BatchEncoding (half the time on the train split)
        return [encoding.ids for encoding in backend.encode_batch(texts, add_special_tokens=False)]
    return list(tokenizer(texts, add_special_tokens=False)["input_ids"])


def collate(items: Sequence[EncodedRecord], pad_id: int) -> Batch:
    """Right-padded ``input_ids``, ``attention_mask`` and ``labels`` (-100 outside the response + EOS)."""
    width = max(len(item.input_ids) for item in items)
    ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    labels = torch.full((len(items), width), IGNORE_INDEX, dtype=torch.long)
    for row, item in enumerate(items):
        n = len(item.input_ids)
        ids[row, :n] = torch.tensor(item.input_ids)
        mask[row, :n] = 1
        labels[row, item.prompt_len : n] = ids[row, item.prompt_len : n]
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


class CellBatches:
    """Batches of one cell each; with a seed, items and batch order are reshuffled on every pass.

    Without a seed the order is fixed (cells sorted, items in corpus order), for evaluation. The
    k-th pass of a seeded instance uses ``random.Random(f"{seed}:{k}")``, so a run is reproducible.
    ``positions`` and ``tokens`` count what was yielded, so a consumer that stops early (a step or
    token budget, a row cap) is charged only for the batches it took.
    """

    def __init__(self, items: Sequence[EncodedRecord], batch_size: int, pad_id: int, seed: int | None = None):
        if batch_size < 1:
            raise ValueError(f"batch_size: must be >= 1, got {batch_size}")
        self.cells: dict[str, list[EncodedRecord]] = {}
        for item in items:
            self.cells.setdefault(item.cell, []).append(item)
        self.batch_size = batch_size
        self.pad_id = pad_id
        self.seed = seed
        self.passes = 0
        self.positions = 0  # padded positions yielded so far (the compute spent on them)
        self.tokens = 0  # non-padding tokens yielded so far

    def __len__(self) -> int:
        return sum(-(-len(v) // self.batch_size) for v in self.cells.values())

    def __iter__(self) -> Iterator[Batch]:
        rng = None if self.seed is None else random.Random(f"{self.seed}:{self.passes}")
        self.passes += 1
        chunks: list[list[EncodedRecord]] = []
        for cell in sorted(self.cells):
            items = list(self.cells[cell])
            if rng is not None:
                rng.shuffle(items)
            chunks += [items[i : i + self.batch_size] for i in range(0, len(items), self.batch_size)]
        if rng is not None:
            rng.shuffle(chunks)
        for chunk in chunks:
            batch = collate(chunk, self.pad_id)
            self.positions += batch["input_ids"].numel()
            self.tokens += int(batch["attention_mask"].sum())
            yield batch


def response_tokens(items: Sequence[EncodedRecord]) -> int:
    """Supervised tokens (response + EOS) in ``items``."""
    return sum(len(item.input_ids) - item.prompt_len for item in items)


def sequence_tokens(items: Sequence[EncodedRecord]) -> int:
    """All tokens (prompt + response + EOS) in ``items``."""
    return sum(len(item.input_ids) for item in items)
