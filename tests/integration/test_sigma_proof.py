"""The feature proof at tiny size: the full profile's counters all agree with what is enabled."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from cascadelab.config import TokenizerParams
from cascadelab.data.code_tasks import build_code_splits, write_code_tasks
from cascadelab.data.hidden_eval import manifest_path, write_manifest
from cascadelab.data.tokenizer import train_tokenizer
from cascadelab.pipeline.sigma_proof import check_row, main, proof_rl_section, proof_section, run_proof


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
            {
                "id": f"{split}{a}-{b}",
                "task": "add",
                "difficulty": 1,
                "prompt": f"{a}+{b}=",
                "response": f"+{a + b}",
                "answer": str(a + b),
            }
            for a in range(offset, offset + 12)
            for b in range(3)
        ]
        for split, offset in (("train", 10), ("val", 40), ("test", 60))
    }
    (root / "corpus").mkdir()
    for split, records in rows.items():
        (root / "corpus" / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (root / "corpus" / "meta.json").write_text(json.dumps({"answer_format": "reversed"}))
    # lambdas only: no required literals, so even a random policy's "7" or "x" parses and reaches the sandbox
    code = {
        split: [r for r in rows if r["template"].startswith("lambda")]
        for split, rows in build_code_splits([1], 400, 40, 40, seed=1).items()
    }
    write_code_tasks(code, root / "code_tasks")
    hidden = {split: [r["prompt"] for r in rows[split] + code[split]] for split in ("val", "test")}
    write_manifest(manifest_path(root / "corpus"), hidden)  # as prepare writes it
    texts = [r["prompt"] + r["response"] for r in rows["train"] + code["train"] + code["val"] + code["test"]]
    train_tokenizer(texts, TokenizerParams(kind="char")).save_pretrained(str(root / "tokenizer"))
    return root


TINY = {"model": {"preset": "tiny"}, "mix": {"add": 1.0}, "train": {"batch_size": 4}, "eval": {"batch_size": 16}}


TINY_RL = {
    "mix": {"add": 0.5, "code": 0.5},
    "train": {"batch_size": 4, "num_threads": 1},
    "grpo": {"prompts_per_step": 2, "num_generations": 4, "max_completion_length": 2, "code_share": 1.0},
    "auto_mix": {"initial_share": 0.5, "max_share": 0.6},
    "eval": {"batch_size": 16, "max_new_tokens": 4, "sample_predictions": 0},
}
RL_FEATURES = (
    "grpo",
    "verifier",
    "verifier_cascade",
    "asym_verify",
    "causal_replay",
    "auto_mix",
    "code_rl",
    "meta_loop",
    "research_log",
    "self_improver",
    "counterfactual_credit",
    "fractal_nas",
    "draft_heads",
)


def test_the_full_profile_proves_every_feature_at_tiny_size(data: Path, tmp_path: Path) -> None:
    section = proof_section(TINY, steps=24)
    assert section.optimizer.name == "c3o" and all(section.features.model_dump().values())
    rl_section = proof_rl_section(TINY_RL, steps=24)
    assert rl_section.optimizer.name == "c3o" and all(rl_section.features.model_dump().values())
    row, problems = run_proof(
        section, 1, data / "corpus", data / "tokenizer", tmp_path / "proof", rl_section, data / "code_tasks"
    )
    assert problems == []
    names = ("c3o_credit", "integrity_guards", "prefetch", "bitlinear", "moe", "mamba", "mla", "instant", *RL_FEATURES)
    for name in names:
        assert row[f"feature_{name}_enabled"] == 1 and row[f"feature_{name}_effective_calls"] > 0, name
    assert (tmp_path / "proof" / "rl" / "metrics.jsonl").is_file()
    assert row["feature_triton_enabled"] == 0 and row["feature_triton_effective_calls"] == 0  # no CUDA here
    assert row["feature_c3o_credit_effective_calls"] == 6  # credit window 24 // 6 = 4 steps (the RL run's 24 too)
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


def test_the_proof_names_an_rl_feature_that_never_ran(data: Path, tmp_path: Path) -> None:
    cheap = {"fractal_nas": False, "draft_heads": False}
    rl_section = proof_rl_section({**TINY_RL, "features": cheap, "replay": {"per_step": 0}}, steps=12)  # never sampled
    _, problems = run_proof(
        proof_section(TINY, steps=12),
        1,
        data / "corpus",
        data / "tokenizer",
        tmp_path / "p",
        rl_section,
        data / "code_tasks",
    )
    assert problems == ["sigma_rl: feature causal_replay: enabled but 0 effective calls"]
