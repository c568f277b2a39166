"""The feature proof at tiny size: the full profile's counters all agree with what is enabled."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from cascadelab.config import TokenizerParams
from cascadelab.data.tokenizer import train_tokenizer
from cascadelab.training.sigma_proof import check_row, main, proof_section, run_proof


@pytest.fixture(autouse=True)
def _single_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    rows = {
        split: [
            {"task": "add", "prompt": f"{a}+{b}=", "response": f"+{a + b}"}
            for a in range(offset, offset + 12)
            for b in range(3)
        ]
        for split, offset in (("train", 10), ("val", 40))
    }
    (root / "corpus").mkdir()
    for split, records in rows.items():
        (root / "corpus" / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    texts = [r["prompt"] + r["response"] for r in rows["train"]]
    train_tokenizer(texts, TokenizerParams(kind="char")).save_pretrained(str(root / "tokenizer"))
    return root


TINY = {"model": {"preset": "tiny"}, "mix": {"add": 1.0}, "train": {"batch_size": 4}, "eval": {"batch_size": 16}}


def test_the_full_profile_proves_every_feature_at_tiny_size(data: Path, tmp_path: Path) -> None:
    section = proof_section(TINY, steps=24)
    assert section.optimizer.name == "c3o" and all(section.features.model_dump().values())
    row, problems = run_proof(section, 1, data / "corpus", data / "tokenizer", tmp_path / "proof")
    assert problems == []
    for name in ("c3o_credit", "integrity_guards", "prefetch", "bitlinear", "moe", "mamba", "mla", "instant"):
        assert row[f"feature_{name}_enabled"] == 1 and row[f"feature_{name}_effective_calls"] > 0, name
    assert row["feature_triton_enabled"] == 0 and row["feature_triton_effective_calls"] == 0  # no CUDA here
    assert row["feature_c3o_credit_effective_calls"] == 6  # credit window 24 // 6 = 4 steps
    assert (tmp_path / "proof" / "resolved_settings.json").is_file()


def test_the_proof_names_a_feature_whose_counter_contradicts_it() -> None:
    row = {
        "feature_a_enabled": 1.0,
        "feature_a_effective_calls": 0.0,
        "feature_b_enabled": 0.0,
        "feature_b_effective_calls": 3.0,
        "feature_c_enabled": 1.0,
        "feature_c_effective_calls": 5.0,
    }
    assert check_row(row) == [
        "feature a: enabled but 0 effective calls",
        "feature b: disabled but 3 effective calls",
    ]


def test_the_proof_fails_on_a_crash_report(data: Path, tmp_path: Path) -> None:
    section = proof_section({**TINY, "mix": {"add": 1.0, "mul": 1.0}}, steps=12)  # no mul rows: crashes
    _, problems = run_proof(section, 1, data / "corpus", data / "tokenizer", tmp_path / "proof")
    assert problems[0].startswith("run crashed at step 1: ValueError: mix.mul: no training rows")
    assert problems[-1].startswith("errors/ is not empty: ")


def test_the_command_exits_one_line_on_an_impossible_profile(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("sigma_pretrain:\n  optimizer: {name: adamw}\n")
    assert main(["--params", str(params), "--data", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == (
        "error: params.yaml: sigma_pretrain.features.c3o_credit: true needs optimizer.name: c3o (got adamw)\n"
    )
