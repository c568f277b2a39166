"""The sigma_pretrain stage on a tiny real corpus: the baseline in its own process gives the same run as in line."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from cascadelab.config import PrepareParams, SigmaPretrainParams
from cascadelab.models.sigma import FEATURES
from cascadelab.pipeline import sigma_pretrain
from cascadelab.pipeline.measurements import is_measurement
from cascadelab.pipeline.paths import PATHS
from cascadelab.pipeline.prepare import prepare

TINY = {
    "model": {"preset": "tiny"},
    "train": {"max_steps": 12, "batch_size": 8, "logging_steps": 4, "warmup_steps": 2, "eval_steps": 6},
    "mix": {"add": 1.0, "sub": 1.0},
    "baseline": {"hidden_size": 32, "num_layers": 3, "num_heads": 2, "intermediate_size": 64},
    "eval": {"batch_size": 64, "max_new_tokens": 4, "sample_predictions": 3},
}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("data")
    families = {"add": {"difficulties": [1]}, "sub": {"difficulties": [1]}}
    params = PrepareParams.model_validate({"families": families, "sizes": {"train": 40, "val": 8, "test": 6}})
    prepare(params, 0, root / "corpus", root / "tokenizer")
    return root / "corpus", root / "tokenizer"


def run(data: tuple[Path, Path], out: Path, parallel: bool) -> tuple[dict, dict]:
    raw = {**TINY, "train": {**TINY["train"], "parallel_baseline": parallel}}
    params = SigmaPretrainParams.model_validate(raw)
    logged: dict[str, float] = {}
    corpus, tokenizer = data
    paths = replace(PATHS, corpus=corpus, tokenizer=tokenizer, sigma=out / "model", sigma_pretrain_run=out / "runs")
    outcome = sigma_pretrain.run(params, 3, paths, log_fn=lambda row, step: logged.update(row))
    return outcome.__dict__, logged


def test_parallel_baseline_reproduces_the_sequential_run(data: tuple[Path, Path], tmp_path: Path) -> None:
    parallel, logged = run(data, tmp_path / "parallel", parallel=True)
    sequential, _ = run(data, tmp_path / "sequential", parallel=False)
    for key, value in sequential["metrics"].items():
        if not is_measurement(key):
            assert parallel["metrics"][key] == pytest.approx(value, rel=1e-6), key
    assert parallel["predictions"] == sequential["predictions"]
    assert [r["loss"] for r in parallel["histories"]["baseline"]] == [
        r["loss"] for r in sequential["histories"]["baseline"]
    ]
    assert parallel["metrics"]["sigma_train_tokens"] == parallel["metrics"]["baseline_train_tokens"]
    assert {"sigma/loss", "baseline/loss", "sigma/feature_mamba_effective_calls"} <= set(logged)
    lines = (tmp_path / "parallel" / "runs" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 3 and all(f"feature_{name}_enabled" in json.loads(lines[-1]) for name in FEATURES)
    assert (tmp_path / "parallel" / "runs" / "baseline" / "metrics.jsonl").is_file()
    assert (tmp_path / "parallel" / "model" / "model.safetensors").is_file()
