import pytest
import torch
from tokenizers import Regex, Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from cascadelab.data.seq2seq import collate_seq2seq, encode_pairs, length_sorted_batches


def char_tokenizer() -> PreTrainedTokenizerFast:
    specials = ["[PAD]", "[BOS]", "[EOS]", "[UNK]"]
    tok = Tokenizer(models.WordLevel({t: i for i, t in enumerate([*specials, "1", "2", "+", "="])}, "[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), "isolated")
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="[PAD]", bos_token="[BOS]", eos_token="[EOS]", unk_token="[UNK]"
    )


def test_pairs_encode_source_plain_and_target_with_eos() -> None:
    assert encode_pairs(char_tokenizer(), [("1+2=", "12")]) == [([4, 6, 5, 7], [4, 5, 2])]
    with pytest.raises(ValueError, match=r"^source text '' encodes to no tokens$"):
        encode_pairs(char_tokenizer(), [("", "1")])


def test_collate_masks_sources_and_ignores_target_padding() -> None:
    batch = collate_seq2seq([[4, 5, 6], [7]], [[4, 2], [5, 6, 2]], pad_token_id=0)
    assert batch.input_ids.tolist() == [[4, 5, 6], [7, 0, 0]]
    assert batch.attention_mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch.labels is not None and batch.labels.tolist() == [[4, 2, -100], [5, 6, 2]]
    assert batch.num_target_tokens() == 5
    assert collate_seq2seq([[4]], None, 0).labels is None
    assert batch.input_ids.dtype == torch.long


def test_length_sorted_batches_cover_every_index_once() -> None:
    batches = length_sorted_batches([5, 1, 3, 1, 4], batch_size=2)
    assert batches == [[1, 3], [2, 4], [0]]
    with pytest.raises(ValueError, match=r"^batch_size must be > 0, got 0$"):
        length_sorted_batches([1], 0)
