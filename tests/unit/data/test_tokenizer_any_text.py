"""The tokenizers never refuse text: any UTF-8 round-trips, prompts stay a prefix, generated ids do not move."""

import random

import pytest
from tests.fixtures.gsm8k_like import gsm8k_like_rows

from cascadelab.config import TASK_FAMILIES, TokenizerParams
from cascadelab.data.batches import encode_prompt_response, encode_texts
from cascadelab.data.tasks import get_family
from cascadelab.data.tokenizer import BYTE_TOKENS, load_tokenizer, round_trip_failures, train_tokenizer

# Code points from every UTF-8 length, controls, combining marks, emoji and the private use area (no surrogates).
RANGES = [(0x00, 0x7F), (0x80, 0x7FF), (0x800, 0xD7FF), (0xE000, 0xFFFF), (0x10000, 0x10FFFF)]


def random_texts(count: int, seed: int) -> list[str]:
    """`count` seeded random strings of 0-40 code points drawn across every UTF-8 encoding length."""
    rng = random.Random(seed)
    texts = []
    for _ in range(count):
        chars = [chr(rng.randint(*rng.choice(RANGES))) for _ in range(rng.randint(0, 40))]
        texts.append("".join(chars))
    return [*texts, "<0x41>", "[EOS]x", "\r\n\t ", "\ufffd", "é" * 3]


def generated_pairs(per_family: int = 30) -> list[tuple[str, str]]:
    """Prompt/response pairs of every generated family at every level, plus worked solutions of a user file."""
    rng = random.Random(0)
    pairs = [
        (item.prompt, text)
        for name in TASK_FAMILIES
        for level in (1, 2, 3)
        for item in (get_family(name).sample(rng, level) for _ in range(per_family))
        for text in (item.response, item.steps)
    ]
    return pairs + [(row["question"], row["answer"]) for row in gsm8k_like_rows(60)]


@pytest.fixture(scope="module")
def pairs() -> list[tuple[str, str]]:
    return generated_pairs()


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_any_utf8_text_round_trips_after_save_and_load(kind, pairs, tmp_path) -> None:  # type: ignore[no-untyped-def]
    train = [p + r for p, r in pairs[:200]]
    tokenizer = train_tokenizer(train, TokenizerParams(kind=kind, vocab_size=300))
    tokenizer.save_pretrained(str(tmp_path))
    loaded = load_tokenizer(tmp_path)
    texts = random_texts(300, seed=1)
    assert round_trip_failures(tokenizer, texts) == []
    assert round_trip_failures(loaded, texts) == []
    assert tokenizer.unk_token_id not in {i for ids in encode_texts(loaded, texts) for i in ids}


def test_unseen_characters_become_their_utf8_bytes() -> None:
    tokenizer = train_tokenizer(["ab"], TokenizerParams())
    ids = tokenizer("a\u201cb", add_special_tokens=False)["input_ids"]
    assert tokenizer.convert_ids_to_tokens(ids) == ["a", "<0xE2>", "<0x80>", "<0x9C>", "b"]


def test_byte_fallback_keeps_the_ids_of_the_train_alphabet(pairs) -> None:  # type: ignore[no-untyped-def]
    train = [p + r for p, r in pairs]
    with_bytes = train_tokenizer(train, TokenizerParams())
    without = train_tokenizer(train, TokenizerParams(byte_fallback=False))
    assert encode_texts(with_bytes, train) == encode_texts(without, train)
    assert len(with_bytes) == len(without) + len(BYTE_TOKENS)
    assert with_bytes.convert_tokens_to_ids(BYTE_TOKENS[0]) == len(without)  # the bytes come after the alphabet


def test_without_byte_fallback_an_unseen_character_is_lost() -> None:
    tokenizer = train_tokenizer(["ab"], TokenizerParams(byte_fallback=False))
    assert round_trip_failures(tokenizer, ["a\u201cb"]) == ["a\u201cb"]


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_the_prompt_tokens_are_a_prefix_on_every_family_and_on_worked_solutions(kind, pairs) -> None:  # type: ignore[no-untyped-def]
    tokenizer = train_tokenizer([p + r for p, r in pairs], TokenizerParams(kind=kind, vocab_size=400))
    prompts, responses = [p for p, _ in pairs], [r for _, r in pairs]
    rows = encode_prompt_response(tokenizer, prompts, responses)
    for row, response, prompt_ids in zip(rows, responses, encode_texts(tokenizer, prompts), strict=True):
        assert list(row.input_ids[: row.prompt_len]) == prompt_ids
        assert tokenizer.decode(list(row.input_ids[row.prompt_len : -1])) == response
        assert row.input_ids[-1] == tokenizer.eos_token_id
