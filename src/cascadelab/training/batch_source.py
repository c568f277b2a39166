"""The training batches a SIGMA run draws: the corpus alone, or the corpus mixed with a streamed dataset.

With ``data.source: hybrid`` the :class:`~cascadelab.data.text_stream.HybridBatches` mix is wrapped in a
:class:`~cascadelab.training.batch_pipeline.FallbackSource`: when the stream fails (no network, a missing
field), the rest of the run draws from the corpus and the trainer reports the fallback as
``data_fallbacks``. The corpus batches are drawn from one iterator in either case, so the fallback
continues exactly where the mixed source stopped.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from transformers import PreTrainedTokenizerBase

from cascadelab.data.batches import Batch
from cascadelab.data.text_stream import HybridBatches, stream_texts, text_batches
from cascadelab.training.batch_pipeline import FallbackSource

if TYPE_CHECKING:
    from cascadelab.config import SigmaDataParams, SigmaStreamParams


def build_batch_source(
    corpus: Iterable[Batch],
    data: SigmaDataParams,
    tokenizer: PreTrainedTokenizerBase,
    batch_size: int,
    seed: int,
) -> Iterable[Batch]:
    """The training batches `data.source` asks for: the corpus alone, or hybrid with a counted fallback."""
    if data.source == "local":
        return corpus
    stream = data.stream
    assert stream is not None  # config validation requires it for `hybrid`
    corpus_batches = iter(corpus)
    hybrid = HybridBatches(
        corpus_batches,
        lambda: text_batches(_texts(stream, seed), tokenizer, batch_size, stream.max_length),
        stream.weight,
        seed,
        data.bootstrap_batches,
    )
    return FallbackSource(hybrid, corpus_batches)


def _texts(stream: SigmaStreamParams, seed: int) -> Iterator[str]:
    options: dict[str, Any] = {"name": stream.name, "split": stream.split, "data_files": stream.data_files}
    return stream_texts(stream.path, stream.text_field, seed, shuffle_buffer=stream.shuffle_buffer, **options)
