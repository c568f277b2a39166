"""The hybrid_rnn stage's logic on a tiny real corpus: artifacts, metric keys, determinism, reload."""

import json
import math
from dataclasses import replace

import pytest
import torch
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

from cascadelab.config import HybridRNNParams, PrepareParams
from cascadelab.data.corpus import load_split
from cascadelab.data.held_out import final_evaluation
from cascadelab.data.seq2seq import collate_seq2seq, encode_source
from cascadelab.models.hybrid_rnn import HybridRNNTransformer
from cascadelab.pipeline import hybrid_rnn
from cascadelab.pipeline.measurements import is_measurement
from cascadelab.pipeline.paths import PATHS
from cascadelab.pipeline.prepare import prepare

TINY = {
    "model": {"preset": "tiny"},
    "train": {
        "max_steps": 24,
        "batch_size": 8,
        "warmup_steps": 2,
        "logging_steps": 4,
        "eval_steps": 8,
        "num_threads": 1,
    },
    "curriculum": {"max_warmup_fraction": 0.5},
    "mix": {"add": 0.4, "sub": 0.4, "mul": 0.2},
    "eval": {"batch_size": 64, "max_new_tokens": 6, "sample_predictions": 5},
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    families = {name: {"difficulties": [1]} for name in ("add", "sub", "mul")}
    prepare(PrepareParams(families=families, sizes={"train": 60, "val": 8, "test": 12}), 0, root / "c", root / "t")
    return root / "c", root / "t"


@pytest.fixture(scope="module")
def runs(corpus, tmp_path_factory):
    previous = torch.get_num_threads()
    params = HybridRNNParams.model_validate(TINY)
    out = tmp_path_factory.mktemp("models")
    corpus_dir, tokenizer_dir = corpus
    paths = [replace(PATHS, corpus=corpus_dir, tokenizer=tokenizer_dir, hybrid_rnn=out / f"m{i}") for i in range(2)]
    outcomes = [hybrid_rnn.run(params, 7, p) for p in paths]
    torch.set_num_threads(previous)
    return outcomes, out


def test_metrics_have_coarse_keys_for_greedy_and_prefixed_keys_for_sample_and_beam(runs):
    (outcome, _), _ = runs
    metrics = outcome.metrics
    for prefix in ("", "sample_", "beam_"):
        for key in ("em", "em_add", "em_sub", "em_mul", "em_add1", "em_mul1", "eval_tokens_per_s"):
            assert f"{prefix}{key}" in metrics
            assert 0 <= metrics[f"{prefix}{key}"] <= (100 if "em" in key else math.inf)
    assert math.isfinite(metrics["test_ppl"]) and metrics["test_ppl"] > 1
    assert metrics["train_steps"] == 24 and metrics["train_tokens_per_s"] > 0
    assert metrics["curriculum_switch_step"] == 12  # the warm-up cap: a tiny model's loss stays above 0.1
    saved = AutoModelForSeq2SeqLM.from_pretrained(runs[1] / "m0")
    assert metrics["params"] == sum(p.numel() for p in saved.parameters())
    json.dumps(metrics)  # what the stage writes


def test_curves_and_predictions(runs):
    (outcome, _), _ = runs
    assert [row["step"] for row in outcome.train_history] == [4.0, 8.0, 12.0, 16.0, 20.0, 24.0]
    assert [row["step"] for row in outcome.val_history] == [8.0, 16.0, 24.0]
    assert len(outcome.predictions) == 5
    assert set(outcome.predictions[0]) == {"id", "task", "prompt", "answer", "greedy", "sample", "beam", "correct"}


def test_same_seed_same_run(runs):
    (first, second), out = runs
    for key, value in first.metrics.items():
        if not is_measurement(key):
            assert second.metrics[key] == value, key
    assert first.predictions == second.predictions
    assert (out / "m0" / "model.safetensors").read_bytes() == (out / "m1" / "model.safetensors").read_bytes()


def test_saved_model_and_tokenizer_reload_and_generate(runs, corpus):
    _, out = runs
    model = AutoModelForSeq2SeqLM.from_pretrained(out / "m0").eval()
    tokenizer = AutoTokenizer.from_pretrained(out / "m0")
    assert isinstance(model, HybridRNNTransformer)
    assert model.config.pad_token_id == tokenizer.pad_token_id and model.config.vocab_size == len(tokenizer)
    with final_evaluation("test_hybrid_rnn_stage"):
        record = load_split(corpus[0], "test")[0]
    batch = collate_seq2seq([encode_source(tokenizer, record["prompt"])], None, tokenizer.pad_token_id)
    ids = model.generate(input_ids=batch.input_ids, attention_mask=batch.attention_mask, max_new_tokens=6)
    assert ids.shape[0] == 1 and ids[0, 0].item() == tokenizer.bos_token_id
