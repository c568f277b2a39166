"""A streaming Hugging Face text source mixed with the local corpus: the seed's `hybrid` data backend.

For users with a network (or a local dataset folder), `data.source: hybrid` mixes language-modelling
batches of a streamed dataset's text field into the corpus batches:

- :func:`stream_texts` streams ``load_dataset(path, name, split=..., streaming=True)`` (a hub id, a
  local folder, or a builder such as ``json`` with ``data_files``), shuffled with a seeded buffer;
- :func:`text_batches` tokenizes each text (truncated to `max_length`, EOS appended; every token is a
  target) into right-padded batches;
- :class:`HybridBatches` draws each batch from the stream with probability `weight` (a seeded
  choice), except the first `bootstrap_batches`, which always come from the corpus, so every run
  starts on the same deterministic batches however the stream behaves;
- :func:`cascadelab.training.batch_source.build_batch_source` wraps that in a fallback: when the
  stream fails (no network, a missing field), the rest of the run draws from the corpus and the
  trainer reports the fallback as ``data_fallbacks``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Iterator

from transformers import PreTrainedTokenizerBase

from cascadelab.data.batches import Batch, EncodedRow, LMBatch, collate_rows, encode_texts


def stream_texts(
    path: str,
    text_field: str,
    seed: int,
    name: str | None = None,
    split: str = "train",
    data_files: str | list[str] | None = None,
    shuffle_buffer: int = 0,
) -> Iterator[str]:
    """The non-empty `text_field` values of a streamed dataset, in a seeded shuffled order."""
    from datasets import load_dataset

    dataset = load_dataset(path, name, split=split, streaming=True, data_files=data_files)
    if shuffle_buffer:
        dataset = dataset.shuffle(seed=seed, buffer_size=shuffle_buffer)
    for row in dataset:
        if text_field not in row:
            raise KeyError(f"stream {path}: rows have no field {text_field!r} (fields: {', '.join(row)})")
        text = row[text_field]
        if isinstance(text, str) and text.strip():
            yield text


def text_batches(
    texts: Iterable[str], tokenizer: PreTrainedTokenizerBase, batch_size: int, max_length: int
) -> Iterator[LMBatch]:
    """Right-padded language-modelling batches: each text's ids (truncated, EOS appended) are all targets."""
    if tokenizer.pad_token_id is None or tokenizer.eos_token_id is None:
        raise ValueError("tokenizer: needs pad and eos tokens")
    pad, eos = int(tokenizer.pad_token_id), int(tokenizer.eos_token_id)
    rows: list[EncodedRow] = []
    for text in texts:
        ids = encode_texts(tokenizer, [text])[0][: max_length - 1]
        rows.append(EncodedRow((*ids, eos), 0))  # no prompt: every token is a target
        if len(rows) == batch_size:
            yield collate_rows(rows, pad, with_mask=False)
            rows = []


class HybridBatches:
    """Corpus batches with a seeded share `weight` of stream batches, after `bootstrap_batches` corpus ones."""

    def __init__(
        self,
        corpus: Iterator[Batch],
        stream: Callable[[], Iterable[Batch]],
        weight: float,
        seed: int,
        bootstrap_batches: int = 0,
    ) -> None:
        if not 0 <= weight <= 1:
            raise ValueError(f"stream weight must be in [0, 1], got {weight}")
        self._corpus = corpus
        self._open_stream = stream  # opened on first use, so a failing load happens inside next()
        self._stream: Iterator[Batch] | None = None
        self._rng = random.Random(seed)
        self._weight, self._bootstrap = weight, bootstrap_batches
        self.drawn = 0
        self.stream_batches = 0

    def __iter__(self) -> Iterator[Batch]:
        return self

    def __next__(self) -> Batch:
        # the draw happens for every batch (bootstrap included), so the choice sequence depends on the seed only
        from_stream = self._rng.random() < self._weight and self.drawn >= self._bootstrap
        self.drawn += 1
        if not from_stream:
            return next(self._corpus)
        if self._stream is None:
            self._stream = iter(self._open_stream())
        batch = next(self._stream, None)
        if batch is None:
            raise RuntimeError("stream: exhausted")  # a finite dataset ran out: the corpus takes over
        self.stream_batches += 1
        return batch
