"""The training batch source of a SIGMA run: the corpus alone, or mixed with a stream, with a counted fallback."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cascadelab.config import ParamsError, SigmaDataParams, parse_params
from cascadelab.data.batches import Batch
from cascadelab.data.tokenizer import load_tokenizer
from cascadelab.training.batch_pipeline import FallbackSource
from cascadelab.training.batch_source import build_batch_source


def corpus(n: int) -> list[Batch]:
    """Distinguishable stand-in corpus batches (first id = index)."""
    return [{"input_ids": torch.full((2, 3), i), "labels": torch.full((2, 3), i)} for i in range(n)]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    from cascadelab.config import PrepareParams
    from cascadelab.pipeline.prepare import prepare

    root = tmp_path_factory.mktemp("tok")
    sizes = {"train": 30, "val": 5, "test": 5}
    params = PrepareParams.model_validate({"families": {"add": {"difficulties": [1]}}, "sizes": sizes})
    prepare(params, 0, root / "corpus", root / "tokenizer")
    return load_tokenizer(root / "tokenizer")


def test_hybrid_with_an_unreachable_dataset_falls_back_to_the_corpus_and_counts_it(
    tokenizer,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    stream = {"path": str(tmp_path / "no-such-dataset"), "weight": 0.5}
    data = SigmaDataParams.model_validate({"source": "hybrid", "bootstrap_batches": 2, "stream": stream})
    source = build_batch_source(corpus(12), data, tokenizer, batch_size=2, seed=0)
    assert isinstance(source, FallbackSource)
    ids = [int(b["input_ids"].flatten()[0]) for b in source]
    assert ids == list(range(12))  # every corpus batch, in order, none lost at the switch
    assert source.fallbacks == 1 and source.last_error is not None


def test_a_local_source_is_the_corpus_batches_unchanged(tokenizer) -> None:  # type: ignore[no-untyped-def]
    batches = corpus(3)
    assert build_batch_source(batches, SigmaDataParams(), tokenizer, batch_size=2, seed=0) is batches


def test_hybrid_without_a_stream_is_one_line_naming_the_key() -> None:
    with pytest.raises(ParamsError) as error:
        parse_params({"sigma_pretrain": {"data": {"source": "hybrid"}}})
    assert str(error.value) == (
        "params.yaml: sigma_pretrain.data.stream: required when source is hybrid (set stream.path to a dataset)"
    )
