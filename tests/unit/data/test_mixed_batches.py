"""Corpus batches of the plain training loops: response-only labels, right padding, seeded task mix."""

from __future__ import annotations

import pytest
import torch
from tests.unit.data.tiny_records import RECORDS, records_tokenizer

from cascadelab.data.mixed_batches import TokenizedRows, count_tokens, mixed_batches


@pytest.fixture(scope="module")
def tokenizer():  # type: ignore[no-untyped-def]
    return records_tokenizer()


def test_rows_put_the_loss_on_the_response_and_eos_and_pad_on_the_right(tokenizer) -> None:  # type: ignore[no-untyped-def]
    rows = TokenizedRows(tokenizer, RECORDS)
    batch = rows.collate([1, 0])
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    assert batch["input_ids"].shape == (2, 10)  # "12+30=+24" + EOS
    assert tokenizer.decode(batch["input_ids"][0, :6]) == "1+2=+3"
    assert batch["input_ids"][0, 6].item() == eos and (batch["input_ids"][0, 7:] == pad).all()
    assert batch["labels"][0].tolist()[:7] == [-100] * 4 + batch["input_ids"][0, 4:7].tolist()
    assert (batch["labels"][0, 7:] == -100).all()
    assert count_tokens(batch, pad) == (7 + 10, 3 + 4)  # targets: "+3" EOS and "+24" EOS


def test_mixed_batches_follow_the_mix_one_task_per_batch_and_repeat_with_the_seed(tokenizer) -> None:  # type: ignore[no-untyped-def]
    rows = TokenizedRows(tokenizer, RECORDS)
    first = list(mixed_batches(rows, {"add": 1.0, "rev": 0.0}, 5, 3, seed=7))
    again = list(mixed_batches(rows, {"add": 1.0, "rev": 0.0}, 5, 3, seed=7))
    assert len(first) == 5 and all(b["input_ids"].shape[0] == 3 for b in first)
    assert all(torch.equal(a["input_ids"], b["input_ids"]) for a, b in zip(first, again, strict=True))
    plus = tokenizer.convert_tokens_to_ids("+")
    assert all((b["input_ids"] == plus).any(dim=1).all() for b in first)  # add rows only
    mixed = list(mixed_batches(rows, {"add": 1.0, "rev": 1.0}, 40, 2, seed=0))
    kinds = {bool((b["input_ids"] == plus).any(dim=1).all()) for b in mixed}
    assert kinds == {True, False}
    assert all(len({bool((row == plus).any()) for row in b["input_ids"]}) == 1 for b in mixed)


def test_mix_naming_a_missing_task_is_an_error(tokenizer) -> None:  # type: ignore[no-untyped-def]
    rows = TokenizedRows(tokenizer, RECORDS)
    with pytest.raises(ValueError, match=r"^mix\.mul: no training rows for this task in the corpus$"):
        next(mixed_batches(rows, {"mul": 1.0}, 1, 2, seed=0))
