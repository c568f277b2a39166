"""The one LM batch layer: prompt + response encoding (loss on the response only) and right padding.

Every causal-LM batch producer (SFT rows, SIGMA's mixed batches, LEGO's cell batches, ACOC's task
streams, the streamed-text source) encodes a record as ``prompt + response + EOS`` token ids with
labels -100 on the prompt (:func:`encode_prompt_response`), and pads rows on the right into an
:class:`LMBatch` (:func:`collate_rows`): ids with the pad id, labels with -100, and, where the consumer
asks for one, an attention mask. Right padding needs no mask in a causal model (every real token
precedes the pads; their labels are -100), which is why some producers leave it out.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

IGNORE_INDEX = -100  # label of a position that adds nothing to the loss (prompt, padding)

Batch = Mapping[str, torch.Tensor]  # what a consumer reads: `batch["labels"]`, `model(**batch)`


@dataclass(frozen=True)
class LMBatch(Mapping[str, torch.Tensor]):
    """One right-padded batch: ids, attention mask (None: not given to the model) and labels (-100 = no loss).

    It is also a read-only mapping of its tensors (`batch["input_ids"]`, `model(**batch)`); `task` (the
    task the rows share, "" when mixed) is not one of its keys.
    """

    task: str
    input_ids: torch.Tensor
    attention_mask: torch.Tensor | None
    labels: torch.Tensor

    def _tensors(self) -> dict[str, torch.Tensor]:
        tensors = {"input_ids": self.input_ids, "attention_mask": self.attention_mask, "labels": self.labels}
        return {key: value for key, value in tensors.items() if value is not None}

    def __getitem__(self, key: str) -> torch.Tensor:
        return self._tensors()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._tensors())

    def __len__(self) -> int:
        return len(self._tensors())

    @property
    def num_tokens(self) -> int:
        """Non-padding tokens in the batch (what the token budget counts)."""
        return int(self.attention_mask.sum()) if self.attention_mask is not None else self.input_ids.numel()

    def to(self, device: torch.device | str) -> LMBatch:
        """The batch on `device`."""
        mask = None if self.attention_mask is None else self.attention_mask.to(device)
        return LMBatch(self.task, self.input_ids.to(device), mask, self.labels.to(device))


@dataclass(frozen=True)
class EncodedRow:
    """Token ids of one record (prompt + response + EOS) and how many of them are prompt."""

    input_ids: tuple[int, ...]
    prompt_len: int

    @property
    def labels(self) -> list[int]:
        """The ids with -100 on the prompt: the loss is on the response and EOS."""
        return [IGNORE_INDEX] * self.prompt_len + list(self.input_ids[self.prompt_len :])


def encode_texts(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of each text without special tokens (straight through the Rust tokenizer when fast)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    # The Rust tokenizer gives the same ids without building a BatchEncoding (half the time on the train
    # split), unless an earlier padded or truncated call left padding/truncation switched on in it.
    if backend is not None and backend.padding is None and backend.truncation is None:
        return [encoding.ids for encoding in backend.encode_batch(list(texts), add_special_tokens=False)]
    return [list(ids) for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]]


def encode_prompt_response(
    tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], responses: Sequence[str], jointly: bool = False
) -> list[EncodedRow]:
    """Each pair as ``prompt + response + EOS`` ids, with the prompt's length.

    Prompt and response are tokenized apart and concatenated, so the prompt's tokens are always a prefix
    and the response tokens are exactly those ``generate`` continues the prompt with (a BPE merge across
    the boundary cannot happen). `jointly` tokenizes ``prompt + response`` as one text instead and refuses
    a pair whose prompt tokens are not a prefix of it; a character tokenizer gives the same ids either way.
    """
    if tokenizer.eos_token_id is None:
        raise ValueError("tokenizer: needs an eos token")
    eos = int(tokenizer.eos_token_id)
    prompt_ids = encode_texts(tokenizer, prompts)
    if not jointly:
        response_ids = encode_texts(tokenizer, responses)
        return [EncodedRow((*p, *r, eos), len(p)) for p, r in zip(prompt_ids, response_ids, strict=True)]
    full_ids = encode_texts(tokenizer, [p + r for p, r in zip(prompts, responses, strict=True)])
    rows = []
    for text, prompt, full in zip(prompts, prompt_ids, full_ids, strict=True):
        if full[: len(prompt)] != prompt:
            raise ValueError(prefix_error(tokenizer, text, prompt, full))
        rows.append(EncodedRow((*full, eos), len(prompt)))
    return rows


def prefix_error(tokenizer: PreTrainedTokenizerBase, text: str, prompt: Sequence[int], full: Sequence[int]) -> str:
    """One line, in text rather than ids: the prompt, and how its end is tokenized once the response follows."""
    start = next((i for i, (a, b) in enumerate(zip(prompt, full, strict=False)) if a != b), len(full))
    alone = tokenizer.decode(list(prompt[start:]))
    joined = tokenizer.decode(list(full[start : start + 1]))
    shown = text if len(text) <= 60 else "..." + text[-57:]
    return (
        f"tokenizer: prompt tokens are not a prefix of prompt+response for prompt {shown!r}: its end {alone!r} "
        f"becomes the token {joined!r} once the response follows"
    )


def check_fits_context(
    tokenizer: PreTrainedTokenizerBase,
    records: Sequence[Mapping[str, object]],
    fields: Sequence[str],
    limit: int,
    param: str,
    extra: tuple[int, str] = (0, ""),
) -> None:
    """Raise one line naming `param` when the longest record's `fields` (+ `extra` tokens) exceed `limit` tokens.

    `extra` is (tokens, what they are): 1 for the EOS a training row ends with, or the generation budget that
    follows a prompt. The error names the record and the value `param` must reach instead of letting the
    model run past its positions.
    """
    if not records:
        return
    texts = ["".join(str(record[field]) for field in fields) for record in records]
    lengths = [len(ids) for ids in encode_texts(tokenizer, texts)]
    longest = max(range(len(lengths)), key=lengths.__getitem__)
    needed = lengths[longest] + extra[0]
    if needed > limit:
        what = " + ".join(fields) + (f" + {extra[1]}" if extra[1] else "")
        counts = f"{lengths[longest]} + {extra[0]} = {needed}" if extra[0] else str(needed)
        raise ValueError(
            f"{param}: {limit} is less than the longest {what} ({counts} tokens, id {records[longest].get('id')}); "
            f"raise it to at least {needed}"
        )


def pad_rows(rows: Sequence[Sequence[int]], value: int) -> torch.Tensor:
    """Rows right-padded with `value` to the longest, as one (rows, width) long tensor."""
    width = max(len(row) for row in rows)
    out = torch.full((len(rows), width), value, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.tensor(row, dtype=torch.long)
    return out


def padding_mask(rows: Sequence[Sequence[int]]) -> torch.Tensor:
    """1 on each row's tokens, 0 on the right padding `pad_rows` adds."""
    mask = torch.zeros((len(rows), max(len(row) for row in rows)), dtype=torch.long)
    for i, row in enumerate(rows):
        mask[i, : len(row)] = 1
    return mask


def collate_rows(rows: Sequence[EncodedRow], pad_id: int, task: str = "", with_mask: bool = True) -> LMBatch:
    """Right-pad encoded rows into one batch: ids with `pad_id`, labels with -100 (and on the prompt)."""
    if not rows:
        raise ValueError(f"{task or 'batch'}: cannot collate an empty batch")
    ids = [row.input_ids for row in rows]
    labels = pad_rows(ids, IGNORE_INDEX)
    for i, row in enumerate(rows):
        labels[i, : row.prompt_len] = IGNORE_INDEX
    return LMBatch(task, pad_rows(ids, pad_id), padding_mask(ids) if with_mask else None, labels)
