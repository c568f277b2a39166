"""Per-task batches: one task per batch, fixed order for evaluation, seeded endless streams for training."""

from __future__ import annotations

import pytest
import torch

from cascadelab.config import TokenizerParams
from cascadelab.data.task_streams import build_task_batches, group_records, stream_tasks, task_key
from cascadelab.data.tokenizer import train_tokenizer

RECORDS = [
    {"task": task, "difficulty": d, "prompt": f"{i}{task}{d}=", "response": str(i)}
    for task in ("add", "mul")
    for d in (1, 2)
    for i in range(6)
]


@pytest.fixture(scope="module")
def tokenizer():  # type: ignore[no-untyped-def]
    return train_tokenizer([r["prompt"] + r["response"] for r in RECORDS], TokenizerParams(kind="char"))


def test_a_record_belongs_to_its_cell_first_then_its_family() -> None:
    record = {"task": "mul", "difficulty": 1}
    assert task_key(record, ["mul", "mul1"]) == "mul1"
    assert task_key(record, ["mul"]) == "mul"
    assert task_key(record, ["add"]) is None
    with pytest.raises(ValueError, match=r"^tasks\.sub: no records match this task"):
        group_records(RECORDS, ["add", "sub"])


def test_batches_hold_one_task_and_streams_repeat_with_the_seed(tokenizer) -> None:  # type: ignore[no-untyped-def]
    batches = build_task_batches(RECORDS, tokenizer, ["add", "mul1"], batch_size=4)
    assert len(batches["add"]) == 12 and len(batches["mul1"]) == 6
    fixed = batches["mul1"].fixed()
    assert [b.input_ids.shape[0] for b in fixed] == [4, 2] and {b.task for b in fixed} == {"mul1"}
    eos = tokenizer.eos_token_id
    assert all(int((b.labels == eos).sum()) == b.input_ids.shape[0] for b in fixed)  # EOS is supervised

    def firsts(seed: int) -> list[torch.Tensor]:
        streams = {key: value.stream(seed) for key, value in batches.items()}
        return [b.input_ids for b in stream_tasks(streams, ["add", "mul1", "add", "add", "add"])]

    one, again, other = firsts(3), firsts(3), firsts(4)
    assert all(torch.equal(a, b) for a, b in zip(one, again, strict=True))
    assert not all(a.shape == b.shape and torch.equal(a, b) for a, b in zip(one, other, strict=True))
