"""Corpus records as LEGO batches: prompt + response + EOS token ids, loss on the response only.

Each record becomes ``prompt_ids + response_ids + [eos]`` (prompt and response encoded separately, so
the response tokens are exactly those ``generate`` continues a prompt with), with labels aligned to
the inputs and -100 on the prompt and on padding: the LEGO library shifts them itself. Batches are
right-padded and hold one (task, difficulty) cell each, so short arithmetic items are never padded
to word-problem length.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from transformers import PreTrainedTokenizerBase

from cascadelab.data.batches import EncodedRow, LMBatch, collate_rows, encode_prompt_response


@dataclass(frozen=True)
class EncodedRecord(EncodedRow):
    """Token ids of one record, how many of them are prompt, and its (task, difficulty) cell."""

    cell: str


def encode_records(records: Sequence[dict[str, Any]], tokenizer: PreTrainedTokenizerBase) -> list[EncodedRecord]:
    """Encode ``prompt`` and ``response`` of each record apart (no special tokens) and append EOS."""
    if tokenizer.eos_token_id is None or tokenizer.pad_token_id is None:
        raise ValueError("tokenizer: needs eos and pad tokens")
    if not records:
        return []
    rows = encode_prompt_response(tokenizer, [r["prompt"] for r in records], [r["response"] for r in records], False)
    out = []
    for record, row in zip(records, rows, strict=True):
        if not row.prompt_len:
            raise ValueError(f"record {record.get('id', '?')}: empty prompt")
        out.append(EncodedRecord(row.input_ids, row.prompt_len, f"{record['task']}{record.get('difficulty', '')}"))
    return out


T = TypeVar("T")


def pass_rng(seed: int | None, passes: int) -> random.Random | None:
    """The generator of a seeded loader's pass number `passes` (None without a seed: a fixed order)."""
    return None if seed is None else random.Random(f"{seed}:{passes}")


def cell_chunks(cells: Mapping[str, Sequence[T]], batch_size: int, rng: random.Random | None) -> list[list[T]]:
    """Each cell's items cut into batches of `batch_size` (cells sorted), then all batches in one list.

    With `rng`, each cell's items are shuffled before the cut and the batches after it.
    """
    chunks: list[list[T]] = []
    for cell in sorted(cells):
        items = list(cells[cell])
        if rng is not None:
            rng.shuffle(items)
        chunks += [items[i : i + batch_size] for i in range(0, len(items), batch_size)]
    if rng is not None:
        rng.shuffle(chunks)
    return chunks


def chunk_count(cells: Mapping[str, Sequence[Any]], batch_size: int) -> int:
    """How many batches `cell_chunks` cuts from `cells`."""
    return sum(-(-len(items) // batch_size) for items in cells.values())


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
        return chunk_count(self.cells, self.batch_size)

    def __iter__(self) -> Iterator[LMBatch]:
        rng = pass_rng(self.seed, self.passes)
        self.passes += 1
        for chunk in cell_chunks(self.cells, self.batch_size, rng):
            batch = collate_rows(chunk, self.pad_id)
            self.positions += batch["input_ids"].numel()
            self.tokens += batch.num_tokens
            yield batch


def response_tokens(items: Sequence[EncodedRecord]) -> int:
    """Supervised tokens (response + EOS) in ``items``."""
    return sum(len(item.input_ids) - item.prompt_len for item in items)


def sequence_tokens(items: Sequence[EncodedRecord]) -> int:
    """All tokens (prompt + response + EOS) in ``items``."""
    return sum(len(item.input_ids) for item in items)
