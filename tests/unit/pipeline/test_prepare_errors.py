import pytest

from cascadelab.config import TokenizerParams
from cascadelab.data.tokenizer import train_tokenizer
from cascadelab.pipeline.prepare import check_round_trip


def record(id_, prompt, response):
    return {"id": id_, "prompt": prompt, "response": response}


def test_a_character_missing_from_the_char_vocabulary_is_named_with_where_it_occurs_and_the_fix():
    train = [record("t-0", "1+1=", "2 ")]
    splits = {"train": train, "val": [record("v-0", "1+1=", "2"), record("v-1", "1+1=", "2 \u2019s")], "test": []}
    tokenizer = train_tokenizer(["1+1=", "2 "], TokenizerParams(byte_fallback=False))
    with pytest.raises(ValueError) as caught:
        check_round_trip(tokenizer, splits, "char")
    assert str(caught.value) == (
        "tokenizer: the char tokenizer learned on the train split cannot encode '\u2019' (U+2019), "
        "first seen in val line 2 (id v-1, field response); "
        "set prepare.tokenizer.byte_fallback: true (unseen characters as UTF-8 bytes)"
    )


def test_a_corpus_the_tokenizer_covers_passes():
    splits = {"train": [record("t-0", "1+1=", "2")], "val": [record("v-0", "1+1=", "2")], "test": []}
    check_round_trip(train_tokenizer(["1+1=", "2"], TokenizerParams()), splits, "char")
