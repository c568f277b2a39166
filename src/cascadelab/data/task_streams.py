"""Per-task batches of prompt/response records for plain PyTorch training loops.

Each record becomes `prompt + response + EOS` token ids with labels -100 on the prompt
(:func:`cascadelab.data.batches.encode_prompt_response`, as the SFT rows). A batch holds one task only
and is padded on the right with the pad id; padding is masked out of attention and ignored by the loss. Training
streams reshuffle every epoch from a seed, so two streams built with the same seed yield the same batches.

A task key is a family name (`add`, every difficulty) or a cell name (`mul1`, family + difficulty).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from transformers import PreTrainedTokenizerBase

from cascadelab.data.batches import EncodedRow, LMBatch, collate_rows, encode_prompt_response

Record = dict[str, Any]


class TaskBatches:
    """The tokenized rows of one task, served as fixed batches (evaluation) or as an endless stream (training)."""

    def __init__(self, task: str, rows: Sequence[EncodedRow], batch_size: int, pad_id: int) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size: must be >= 1 (got {batch_size})")
        if not rows:
            raise ValueError(f"{task}: no records for this task")
        self.task = task
        self.rows = list(rows)
        self.batch_size = batch_size
        self.pad_id = pad_id

    def __len__(self) -> int:
        return len(self.rows)

    def fixed(self, limit: int | None = None) -> list[LMBatch]:
        """The rows in order (at most `limit` of them) as consecutive batches."""
        rows = self.rows[:limit] if limit is not None else self.rows
        size = self.batch_size
        return [collate_rows(rows[i : i + size], self.pad_id, self.task) for i in range(0, len(rows), size)]

    def stream(self, seed: int) -> Iterator[LMBatch]:
        """Endless batches, reshuffled every epoch from `seed`; the same seed gives the same stream."""
        epoch = 0
        while True:
            order = list(range(len(self.rows)))
            random.Random(f"{seed}:{self.task}:{epoch}").shuffle(order)
            for start in range(0, len(order) - self.batch_size + 1, self.batch_size):
                yield collate_rows(
                    [self.rows[i] for i in order[start : start + self.batch_size]], self.pad_id, self.task
                )
            epoch += 1


def task_key(record: Record, keys: Iterable[str]) -> str | None:
    """The key among `keys` a record belongs to: its cell (`mul1`) first, else its family (`mul`), else None."""
    keys = set(keys)
    cell = f"{record['task']}{record.get('difficulty', '')}"
    if cell in keys:
        return cell
    return record["task"] if record["task"] in keys else None


def group_records(records: Iterable[Record], keys: Sequence[str]) -> dict[str, list[Record]]:
    """Records grouped by task key (records of no key are dropped); every key must get at least one."""
    groups: dict[str, list[Record]] = {key: [] for key in keys}
    for record in records:
        key = task_key(record, keys)
        if key is not None:
            groups[key].append(record)
    for key, group in groups.items():
        if not group:
            raise ValueError(f"tasks.{key}: no records match this task (a family like `add` or a cell like `mul1`)")
    return groups


def build_task_batches(
    records: Iterable[Record],
    tokenizer: PreTrainedTokenizerBase,
    keys: Sequence[str],
    batch_size: int,
    limit_per_task: int | None = None,
) -> dict[str, TaskBatches]:
    """Tokenize the records of each task key into `TaskBatches` (at most `limit_per_task` rows per task)."""
    batches = {}
    for key, group in group_records(records, keys).items():
        group = group[:limit_per_task] if limit_per_task is not None else group
        rows = encode_prompt_response(tokenizer, [r["prompt"] for r in group], [r["response"] for r in group])
        batches[key] = TaskBatches(key, rows, batch_size, int(tokenizer.pad_token_id))
    return batches


def stream_tasks(streams: Mapping[str, Iterator[LMBatch]], schedule: Sequence[str]) -> Iterator[LMBatch]:
    """The next batch of each task named in `schedule`, in order."""
    for task in schedule:
        yield next(streams[task])
