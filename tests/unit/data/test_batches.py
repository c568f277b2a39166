"""The one LM batch layer: prompt + response encoding, right padding, and the batch as a mapping."""

from __future__ import annotations

import pytest
import torch

from cascadelab.config import TokenizerParams
from cascadelab.data.batches import (
    IGNORE_INDEX,
    EncodedRow,
    LMBatch,
    check_fits_context,
    collate_rows,
    encode_prompt_response,
    encode_texts,
    pad_rows,
    padding_mask,
)
from cascadelab.data.tokenizer import train_tokenizer

PAIRS = [("1+2=", "+3"), ("10+2=", "+21")]


@pytest.fixture(scope="module")
def tokenizer():  # type: ignore[no-untyped-def]
    return train_tokenizer([p + r for p, r in PAIRS], TokenizerParams(kind="char"))


def test_encoding_is_prompt_response_eos_with_the_prompt_length(tokenizer) -> None:  # type: ignore[no-untyped-def]
    prompts, responses = [p for p, _ in PAIRS], [r for _, r in PAIRS]
    joint = encode_prompt_response(tokenizer, prompts, responses, jointly=True)
    apart = encode_prompt_response(tokenizer, prompts, responses)
    assert joint == apart  # a character tokenizer splits the same either way
    first = joint[0]
    assert first.prompt_len == 4 and first.input_ids[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(first.input_ids[:-1]) == "1+2=+3"
    assert first.labels == [IGNORE_INDEX] * 4 + list(first.input_ids[4:])
    assert encode_texts(tokenizer, ["1+2="]) == [tokenizer("1+2=", add_special_tokens=False)["input_ids"]]


def test_rows_pad_on_the_right_and_labels_ignore_prompt_and_padding() -> None:
    rows = [EncodedRow((5, 6, 7), 1), EncodedRow((8, 9), 0)]
    batch = collate_rows(rows, pad_id=0, task="add")
    assert batch.task == "add"
    assert batch.input_ids.tolist() == [[5, 6, 7], [8, 9, 0]]
    assert batch.attention_mask is not None and batch.attention_mask.tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch.labels.tolist() == [[-100, 6, 7], [8, 9, -100]]
    assert batch.num_tokens == 5
    assert pad_rows([[1], [2, 3]], 4).tolist() == [[1, 4], [2, 3]]
    assert padding_mask([[1], [2, 3]]).tolist() == [[1, 0], [1, 1]]


def test_a_batch_is_a_mapping_of_its_tensors_without_a_missing_mask() -> None:
    rows = [EncodedRow((5, 6), 1)]
    masked, bare = collate_rows(rows, 0), collate_rows(rows, 0, with_mask=False)
    assert list(masked) == ["input_ids", "attention_mask", "labels"]
    assert list(bare) == ["input_ids", "labels"] and bare.get("attention_mask") is None
    assert set(dict(**bare)) == {"input_ids", "labels"}  # what `model(**batch)` receives
    assert torch.equal(bare["labels"], bare.labels)
    moved = masked.to("cpu")
    assert isinstance(moved, LMBatch) and torch.equal(moved.input_ids, masked.input_ids)


def test_an_empty_batch_names_its_task() -> None:
    with pytest.raises(ValueError, match=r"^add: cannot collate an empty batch$"):
        collate_rows([], 0, task="add")


def test_encoding_ignores_padding_a_batched_tokenizer_call_left_behind(tokenizer) -> None:  # type: ignore[no-untyped-def]
    plain = encode_texts(tokenizer, ["1+2=", "10+2="])
    tokenizer(["1+2=", "10+2=+21"], padding=True, add_special_tokens=False)  # may leave padding on in the backend
    assert encode_texts(tokenizer, ["1+2=", "10+2="]) == plain == [[*ids] for ids in plain]
    assert len(plain[0]) == 4


def test_a_prompt_whose_end_merges_with_the_response_is_named_in_text_not_ids():
    tokenizer = train_tokenizer(["abab cdab " * 50], TokenizerParams(kind="bpe", vocab_size=300))
    with pytest.raises(ValueError) as caught:
        encode_prompt_response(tokenizer, ["Q: xa"], ["b"], jointly=True)
    assert str(caught.value) == (
        "tokenizer: prompt tokens are not a prefix of prompt+response for prompt 'Q: xa': its end 'a' "
        "becomes the token 'ab' once the response follows"
    )


def test_a_row_longer_than_the_context_names_the_param_and_the_length_it_needs():
    tokenizer = train_tokenizer(["0123456789+="], TokenizerParams())
    records = [{"id": "a-0", "prompt": "1+1=", "response": "2"}, {"id": "a-1", "prompt": "12+345=", "response": "357"}]
    param = "coarse_sft.model.max_position_embeddings"
    check_fits_context(tokenizer, records, ("prompt", "response"), 11, param, (1, "EOS"))  # 7 + 3 + 1 fits
    with pytest.raises(ValueError) as caught:
        check_fits_context(tokenizer, records, ("prompt", "response"), 10, param, (1, "EOS"))
    assert str(caught.value) == (
        "coarse_sft.model.max_position_embeddings: 10 is less than the longest prompt + response + EOS "
        "(10 + 1 = 11 tokens, id a-1); raise it to at least 11"
    )
    with pytest.raises(ValueError) as caught:
        check_fits_context(tokenizer, records, ("prompt",), 16, param, (12, "coarse_sft.eval.max_new_tokens"))
    assert str(caught.value) == (
        "coarse_sft.model.max_position_embeddings: 16 is less than the longest prompt + "
        "coarse_sft.eval.max_new_tokens (7 + 12 = 19 tokens, id a-1); raise it to at least 19"
    )
