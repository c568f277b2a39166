"""LEGO batches from corpus records: response-only labels, one cell per batch, seeded reshuffling."""

import pytest
import torch

from cascadelab.config import TokenizerParams
from cascadelab.data.batches import collate_rows
from cascadelab.data.cell_batches import CellBatches, encode_records, response_tokens, sequence_tokens
from cascadelab.data.tokenizer import train_tokenizer

RECORDS = [
    {"id": "a", "task": "add", "difficulty": 1, "prompt": "1+2=", "response": "+3"},
    {"id": "b", "task": "add", "difficulty": 1, "prompt": "10+2=", "response": "+21"},
    {"id": "c", "task": "rev", "difficulty": 2, "prompt": "rev ab=", "response": "ba"},
    {"id": "d", "task": "add", "difficulty": 1, "prompt": "3+4=", "response": "+7"},
]


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer([r["prompt"] + r["response"] for r in RECORDS], TokenizerParams(kind="char"))


def test_encoding_is_prompt_then_response_then_eos(tokenizer):
    items = encode_records(RECORDS, tokenizer)
    first = items[0]
    assert first.cell == "add1" and first.prompt_len == 4
    assert tokenizer.decode(first.input_ids[:4]) == "1+2="
    assert tokenizer.decode(first.input_ids[4:-1]) == "+3"
    assert first.input_ids[-1] == tokenizer.eos_token_id
    assert response_tokens(items) == 3 + 4 + 3 + 3
    assert sequence_tokens(items) == 7 + 9 + 10 + 7


def test_labels_are_minus_100_outside_the_response_and_eos(tokenizer):
    items = encode_records(RECORDS[:2], tokenizer)
    batch = collate_rows(items, tokenizer.pad_token_id)
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    long = [*tokenizer.convert_tokens_to_ids(list("10+2=+21")), eos]
    short = [*tokenizer.convert_tokens_to_ids(list("1+2=+3")), eos]
    assert batch["input_ids"].tolist() == [[*short, pad, pad], long]
    assert batch["attention_mask"].tolist() == [[1] * 7 + [0, 0], [1] * 9]
    assert batch["labels"].tolist() == [
        [-100] * 4 + short[4:] + [-100, -100],
        [-100] * 5 + long[5:],
    ]


def test_each_batch_holds_one_cell_and_unseeded_order_is_fixed(tokenizer):
    items = encode_records(RECORDS, tokenizer)
    batches = CellBatches(items, batch_size=2, pad_id=tokenizer.pad_token_id)
    assert len(batches) == 3
    first = [b["input_ids"].tolist() for b in batches]
    assert [len(b) for b in first] == [2, 1, 1]  # add1 (2 + 1), then rev2
    assert first == [b["input_ids"].tolist() for b in batches]
    assert batches.tokens == 2 * sequence_tokens(items)
    assert batches.positions == 2 * (2 * 9 + 7 + 10)


def test_seeded_batches_reshuffle_each_pass_reproducibly(tokenizer):
    items = encode_records(RECORDS * 5, tokenizer)

    def passes(seed):
        batches = CellBatches(items, batch_size=3, pad_id=tokenizer.pad_token_id, seed=seed)
        return [[torch.cat([b["input_ids"].flatten() for b in batches]).tolist()] for _ in range(3)]

    one, again, other = passes(7), passes(7), passes(8)
    assert one == again
    assert one != other
    assert one[0] != one[1]  # a new order on every pass


def test_bad_batch_size_and_empty_prompt(tokenizer):
    with pytest.raises(ValueError, match="batch_size: must be >= 1, got 0"):
        CellBatches([], batch_size=0, pad_id=0)
    with pytest.raises(ValueError, match="record x: empty prompt"):
        encode_records([{"id": "x", "task": "add", "prompt": "", "response": "1"}], tokenizer)
