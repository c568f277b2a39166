"""Encoding and padding of (prompt, response) text pairs for encoder-decoder models.

The source is the prompt's tokens without special tokens (the biLSTM needs no markers); the target is the
response's tokens followed by EOS, and the decoder starts from the model's `decoder_start_token_id`.
Batches are padded to their longest row (:mod:`cascadelab.data.batches`' helpers): source padding is
masked, target padding becomes -100. The batch is its own type because the labels are the decoder's, not
aligned with the inputs as an :class:`~cascadelab.data.batches.LMBatch`'s are, and may be absent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

from cascadelab.data.batches import IGNORE_INDEX, encode_prompt_response, encode_texts, pad_rows, padding_mask


@dataclass
class Seq2SeqBatch:
    """Padded tensors for one batch: source ids/mask (B, S) and labels (B, T) with -100 on padding."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor | None

    def num_target_tokens(self) -> int:
        """Label positions that count in the loss."""
        return 0 if self.labels is None else int((self.labels != IGNORE_INDEX).sum())


def _token_id(tokenizer: PreTrainedTokenizerBase, name: str) -> int:
    value = getattr(tokenizer, name)
    if not isinstance(value, int):
        raise ValueError(f"tokenizer has no {name}; seq2seq encoding needs pad and eos tokens")
    return value


def encode_source(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """Token ids of a prompt, without special tokens."""
    ids = encode_texts(tokenizer, [text])[0]
    if not ids:
        raise ValueError(f"source text {text!r} encodes to no tokens")
    return ids


def encode_target(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """Token ids of a response followed by EOS."""
    return [*encode_texts(tokenizer, [text])[0], _token_id(tokenizer, "eos_token_id")]


def encode_pairs(
    tokenizer: PreTrainedTokenizerBase, pairs: Sequence[tuple[str, str]]
) -> list[tuple[list[int], list[int]]]:
    """Encode (prompt, response) pairs into (source ids, target ids + EOS): the prompt and response tokenized apart."""
    _token_id(tokenizer, "eos_token_id")
    rows = encode_prompt_response(tokenizer, [p for p, _ in pairs], [r for _, r in pairs], jointly=False)
    for (prompt, _), row in zip(pairs, rows, strict=True):
        if not row.prompt_len:
            raise ValueError(f"source text {prompt!r} encodes to no tokens")
    return [(list(row.input_ids[: row.prompt_len]), list(row.input_ids[row.prompt_len :])) for row in rows]


def collate_seq2seq(
    sources: Sequence[Sequence[int]], targets: Sequence[Sequence[int]] | None, pad_token_id: int
) -> Seq2SeqBatch:
    """Right-pad sources (masked) and targets (-100) of one batch to their longest row."""
    if not sources:
        raise ValueError("cannot collate an empty batch")
    if targets is not None and len(targets) != len(sources):
        raise ValueError(f"got {len(sources)} sources but {len(targets)} targets")
    labels = pad_rows(targets, IGNORE_INDEX) if targets is not None else None
    return Seq2SeqBatch(input_ids=pad_rows(sources, pad_token_id), attention_mask=padding_mask(sources), labels=labels)


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length (for evaluation, where order does not matter)."""
    if batch_size <= 0:
        raise ValueError(f"batch_size must be > 0, got {batch_size}")
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
