"""The hybrid data backend: a streamed text dataset, its LM batches, and their seeded mix into corpus batches."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cascadelab.data.batches import Batch
from cascadelab.data.text_stream import HybridBatches, stream_texts, text_batches
from cascadelab.data.tokenizer import load_tokenizer

ROOT = Path(__file__).resolve().parents[3]


def corpus(n: int) -> list[Batch]:
    """Distinguishable stand-in corpus batches (first id = index)."""
    return [{"input_ids": torch.full((2, 3), i), "labels": torch.full((2, 3), i)} for i in range(n)]


@pytest.fixture
def texts_file(tmp_path: Path) -> Path:
    path = tmp_path / "texts.jsonl"
    rows = [{"text": f"{i}+{i}={2 * i}", "id": i} for i in range(40)] + [{"text": "", "id": 99}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    from cascadelab.config import PrepareParams
    from cascadelab.pipeline.prepare import prepare

    root = tmp_path_factory.mktemp("tok")
    sizes = {"train": 30, "val": 5, "test": 5}
    params = PrepareParams.model_validate({"families": {"add": {"difficulties": [1]}}, "sizes": sizes})
    prepare(params, 0, root / "corpus", root / "tokenizer")
    return load_tokenizer(root / "tokenizer")


def test_a_local_json_dataset_streams_in_a_seeded_order(texts_file: Path) -> None:
    first = list(stream_texts("json", "text", seed=3, data_files=str(texts_file), shuffle_buffer=16))
    again = list(stream_texts("json", "text", seed=3, data_files=str(texts_file), shuffle_buffer=16))
    other = list(stream_texts("json", "text", seed=4, data_files=str(texts_file), shuffle_buffer=16))
    assert first == again and sorted(first) == sorted(f"{i}+{i}={2 * i}" for i in range(40))
    assert first != other  # the shuffle follows the seed; the empty text is dropped


def test_a_missing_text_field_names_the_fields(texts_file: Path) -> None:
    with pytest.raises(KeyError, match=r"rows have no field 'body' \(fields: text, id\)"):
        next(stream_texts("json", "body", seed=0, data_files=str(texts_file)))


def test_text_batches_supervise_every_token_and_pad_with_ignored_labels(tokenizer) -> None:  # type: ignore[no-untyped-def]
    batch = next(text_batches(["1+1", "12+3=15"], tokenizer, batch_size=2, max_length=6))
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    assert batch["input_ids"].shape == (2, 6)  # "12+3=15" truncated to 5 characters + EOS
    first = batch["input_ids"][0].tolist()
    assert first == [*tokenizer("1+1", add_special_tokens=False)["input_ids"], eos, pad, pad]
    assert batch["labels"][0].tolist() == [*first[:4], -100, -100]
    assert batch["input_ids"][1].tolist() == [*tokenizer("12+3=", add_special_tokens=False)["input_ids"], eos]
    assert batch["labels"][1].tolist() == batch["input_ids"][1].tolist()


def test_hybrid_starts_on_corpus_batches_and_mixes_by_seeded_weight() -> None:
    def stream() -> list[Batch]:
        return [{"input_ids": torch.full((1, 1), 1000 + i), "labels": torch.full((1, 1), 0)} for i in range(200)]

    def firsts(seed: int) -> list[int]:
        hybrid = HybridBatches(iter(corpus(200)), stream, weight=0.3, seed=seed, bootstrap_batches=10)
        return [int(next(hybrid)["input_ids"].flatten()[0]) for _ in range(100)]

    ids = firsts(5)
    assert ids[:10] == list(range(10))  # bootstrap: the corpus, in order
    from_stream = [i for i in ids if i >= 1000]
    assert from_stream == list(range(1000, 1000 + len(from_stream)))  # the stream in its order
    assert 15 <= len(from_stream) <= 40  # ~30 % of the 90 mixed batches
    assert firsts(5) == ids and firsts(6) != ids
