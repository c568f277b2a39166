"""Training batches from the local corpus: prompt + response token ids, loss on the response only.

Rows are tokenized once (:func:`cascadelab.training.sft.encode_prompt_completion`: EOS appended,
labels -100 on the prompt). Batches draw row indices from a :class:`CurriculumSampler` (one task per
batch by default, so short items are not padded to the length of a word problem) and are padded on
the right. Right padding needs no attention mask in training: every real token precedes the pads,
and both the attention and the SSM scan are causal, so the pads change no real token's output; their
labels are -100, so they add nothing to the loss.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from cascadelab.training.curriculum import CurriculumSampler, CurriculumState
from cascadelab.training.sft import encode_prompt_completion

Batch = dict[str, torch.Tensor]
Record = Mapping[str, Any]
IGNORE_INDEX = -100


def pad_batch(input_ids: Sequence[list[int]], labels: Sequence[list[int]], pad_id: int) -> Batch:
    """Right-pad rows to the longest: ids with `pad_id`, labels with -100 (ignored by the loss)."""
    width = max(len(row) for row in input_ids)
    ids = [row + [pad_id] * (width - len(row)) for row in input_ids]
    targets = [row + [IGNORE_INDEX] * (width - len(row)) for row in labels]
    return {"input_ids": torch.tensor(ids), "labels": torch.tensor(targets)}


class TokenizedRows:
    """Token ids and labels of prompt/target records, with their tasks, ready for batching."""

    def __init__(
        self, tokenizer: PreTrainedTokenizerBase, records: Sequence[Record], target_field: str = "response"
    ) -> None:
        if not records:
            raise ValueError("records: no rows to tokenize")
        self.input_ids, self.labels = encode_prompt_completion(
            tokenizer, [r["prompt"] for r in records], [r[target_field] for r in records]
        )
        self.tasks = [str(r["task"]) for r in records]
        if tokenizer.pad_token_id is None:
            raise ValueError("tokenizer: needs a pad token")
        self.pad_id = int(tokenizer.pad_token_id)

    def __len__(self) -> int:
        return len(self.input_ids)

    def collate(self, indices: Sequence[int]) -> Batch:
        """Right-padded `input_ids` and `labels` (-100 on prompt and padding) of the rows at `indices`."""
        return pad_batch([self.input_ids[i] for i in indices], [self.labels[i] for i in indices], self.pad_id)

    def sequential_batches(self, batch_size: int, limit: int | None = None) -> list[Batch]:
        """The first `limit` rows (all by default) in fixed batches, grouped by length to limit padding."""
        order = sorted(range(min(limit or len(self), len(self))), key=lambda i: (len(self.input_ids[i]), i))
        return [self.collate(order[start : start + batch_size]) for start in range(0, len(order), batch_size)]


def mixed_batches(
    rows: TokenizedRows,
    mix: Mapping[str, float],
    num_batches: int,
    batch_size: int,
    seed: int,
    group_by_task: bool = True,
) -> Iterator[Batch]:
    """`num_batches` training batches whose tasks are drawn by `mix` weights; the same seed gives the same batches."""
    sampler = CurriculumSampler(
        rows.tasks,
        mix,
        warmup_tasks=[],  # no warm-up phase: every batch comes from the full mix
        num_samples=num_batches * batch_size,
        seed=seed,
        state=CurriculumState(),
        batch_size=batch_size,
        group_by_task=group_by_task,
    )
    indices = iter(sampler)
    for _ in range(num_batches):
        yield rows.collate([next(indices) for _ in range(batch_size)])


def count_tokens(batch: Batch, pad_id: int) -> tuple[int, int]:
    """(non-padding tokens, supervised target tokens) of a batch."""
    tokens = int((batch["input_ids"] != pad_id).sum())
    targets = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
    return tokens, targets
