"""Training batches from the local corpus: prompt + response token ids, loss on the response only.

Rows are encoded once (:func:`cascadelab.data.batches.encode_prompt_response`: EOS appended, labels
-100 on the prompt). Batches draw row indices from a :class:`CurriculumSampler` (one task per batch by
default, so short items are not padded to the length of a word problem) and are padded on the right.
Right padding needs no attention mask in training: every real token precedes the pads, and both the
attention and the SSM scan are causal, so the pads change no real token's output; their labels are
-100, so they add nothing to the loss. The batches therefore carry no mask.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from transformers import PreTrainedTokenizerBase

from cascadelab.data.batches import IGNORE_INDEX, Batch, LMBatch, collate_rows, encode_prompt_response
from cascadelab.data.curriculum import CurriculumSampler, CurriculumState

Record = Mapping[str, Any]


class TokenizedRows:
    """Token ids and labels of prompt/target records, with their tasks, ready for batching."""

    def __init__(
        self, tokenizer: PreTrainedTokenizerBase, records: Sequence[Record], target_field: str = "response"
    ) -> None:
        if not records:
            raise ValueError("records: no rows to tokenize")
        self.rows = encode_prompt_response(
            tokenizer, [r["prompt"] for r in records], [r[target_field] for r in records]
        )
        self.tasks = [str(r["task"]) for r in records]
        if tokenizer.pad_token_id is None:
            raise ValueError("tokenizer: needs a pad token")
        self.pad_id = int(tokenizer.pad_token_id)

    def __len__(self) -> int:
        return len(self.rows)

    def collate(self, indices: Sequence[int]) -> LMBatch:
        """Right-padded `input_ids` and `labels` (-100 on prompt and padding) of the rows at `indices`."""
        return collate_rows([self.rows[i] for i in indices], self.pad_id, with_mask=False)

    def sequential_batches(self, batch_size: int, limit: int | None = None) -> list[LMBatch]:
        """The first `limit` rows (all by default) in fixed batches, grouped by length to limit padding."""
        order = sorted(range(min(limit or len(self), len(self))), key=lambda i: (len(self.rows[i].input_ids), i))
        return [self.collate(order[start : start + batch_size]) for start in range(0, len(order), batch_size)]


def mixed_batches(
    rows: TokenizedRows,
    mix: Mapping[str, float],
    num_batches: int,
    batch_size: int,
    seed: int,
    group_by_task: bool = True,
) -> Iterator[LMBatch]:
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
