import pytest

from cascadelab.config import TokenizerParams
from cascadelab.data.tokenizer import COARSE, REFINE, load_tokenizer, round_trip_failures, train_tokenizer

TEXTS = ["15+23=", "+830", "rev abc=", "cba", "Ann has 12 pens and gets 3 more. How many?=", "5100,0300:+5430"]


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_round_trip_is_exact_and_specials_are_atomic(kind, tmp_path):
    tokenizer = train_tokenizer(TEXTS * 20, TokenizerParams(kind=kind, vocab_size=300))
    assert round_trip_failures(tokenizer, TEXTS) == []
    text = f"15+23={COARSE}+830{REFINE}"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.convert_tokens_to_ids(COARSE) in ids and tokenizer.convert_tokens_to_ids(REFINE) in ids
    assert tokenizer.decode(ids) == text
    tokenizer.save_pretrained(str(tmp_path))
    loaded = load_tokenizer(tmp_path)
    assert loaded(text, add_special_tokens=False)["input_ids"] == ids
    assert (loaded.pad_token, loaded.bos_token, loaded.eos_token) == ("[PAD]", "[BOS]", "[EOS]")


def test_char_tokenizer_splits_every_character():
    tokenizer = train_tokenizer(TEXTS, TokenizerParams(kind="char"))
    assert len(tokenizer("15+23=", add_special_tokens=False)["input_ids"]) == 6
    assert tokenizer.pad_token_id == 0 and tokenizer.eos_token_id == 2


def test_empty_training_text_is_an_error():
    with pytest.raises(ValueError, match="no training text"):
        train_tokenizer([], TokenizerParams())
