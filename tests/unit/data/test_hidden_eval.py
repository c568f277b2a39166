"""The hidden-eval manifest that `prepare` writes beside the corpus and trainers check at start."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cascadelab.config import PrepareParams
from cascadelab.data.corpus import load_split
from cascadelab.data.held_out import final_evaluation
from cascadelab.data.hidden_eval import check_manifest, manifest_path, prompt_hash
from cascadelab.pipeline.prepare import prepare
from cascadelab.pipeline.sigma_pretrain import check_hidden_eval


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    families = {"add": {"difficulties": [1]}, "reverse": {"difficulties": [1]}}
    params = PrepareParams.model_validate({"families": families, "sizes": {"train": 40, "val": 6, "test": 7}})
    prepare(params, 0, root / "corpus", root / "tokenizer")
    return root / "corpus"


def test_prepare_writes_the_hash_of_every_val_and_test_prompt_beside_the_corpus(corpus: Path) -> None:
    path = manifest_path(corpus)
    assert path == corpus.parent / "hidden_eval" / "manifest.json"
    manifest = json.loads(path.read_text())
    assert set(manifest) == {"val", "test"}
    with final_evaluation("test_hidden_eval"):
        for split in ("val", "test"):
            assert manifest[split] == sorted({prompt_hash(r["prompt"]) for r in load_split(corpus, split)})
    assert not (corpus / "manifest.json").exists()  # the corpus folder's bytes are not touched


def test_the_train_split_passes_the_check_and_a_leak_fails_naming_the_count(corpus: Path) -> None:
    with final_evaluation("test_hidden_eval"):
        test = load_split(corpus, "test")
    assert check_hidden_eval(corpus) == len(load_split(corpus, "val")) + len(test)
    leaked = [r["prompt"].upper() for r in test[:3]]
    with pytest.raises(ValueError, match=r": 3 training prompts are in the hidden val/test splits$"):
        check_manifest(manifest_path(corpus), [r["prompt"] for r in load_split(corpus, "train")] + leaked)


def test_a_corpus_without_its_manifest_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"hidden-eval manifest .*: not found \(run the prepare stage"):
        check_manifest(manifest_path(tmp_path / "corpus"), ["1+1="])
