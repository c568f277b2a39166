"""The `lego_phase1` stage's logic: LEGO's shallow model, trained on train and early-stopped on val."""

from __future__ import annotations

import time

import torch

from cascadelab.config import LegoParams
from cascadelab.data.tokenizer import load_tokenizer
from cascadelab.pipeline.lego_common import (
    CurveLog,
    LegoOutcome,
    LogFn,
    causal_training_flops,
    encoded_split,
    forward_flops_per_token,
    lego_config,
    loop_settings,
    save_lego,
)
from cascadelab.pipeline.paths import Paths
from cascadelab.training.lego_data import CellBatches
from cascadelab.training.lego_trainer import train_phase1


def run(params: LegoParams, seed: int, paths: Paths, log_fn: LogFn | None = None) -> LegoOutcome:
    """Train the shallow ``phase1_layers`` model on train with early stopping on val; save it."""
    corpus_dir, tokenizer_dir, model_dir = paths.corpus, paths.tokenizer, paths.lego_phase1
    torch.set_num_threads(params.num_threads)
    tokenizer = load_tokenizer(tokenizer_dir)
    pad = int(tokenizer.pad_token_id)
    train = CellBatches(encoded_split(corpus_dir, "train", tokenizer), params.phase1.batch_size, pad, seed=seed)
    val = CellBatches(encoded_split(corpus_dir, "val", tokenizer), params.phase1.eval_batch_size, pad)
    config = lego_config(params, tokenizer)
    curves = CurveLog("", log_fn)
    started = time.perf_counter()
    model, result = train_phase1(config, train, val, loop_settings(params.phase1), seed=seed, log_fn=curves)
    seconds = time.perf_counter() - started
    flops = causal_training_flops(train.positions, config.phase1_layers, forward_flops_per_token(config))
    record = {"train_tokens": result["train_tokens"], "train_positions": train.positions, "train_flops": flops}
    save_lego(model, tokenizer, model_dir, record)
    metrics = {
        "val_ppl": result["val_ppl"],
        "val_acc": result["val_acc"],
        "params": int(result["params"]),
        "steps": int(result["steps"]),
        "best_step": int(result["best_step"]),
        "epochs": int(result["epochs"]),
        "stopped_early": bool(result["stopped_early"]),
        "train_seconds": seconds,
        "train_tokens": int(result["train_tokens"]),
        "train_sequence_tokens": train.tokens,
        "train_tokens_per_s": train.tokens / seconds if seconds else 0.0,
        "train_flops": flops,
    }
    return LegoOutcome(metrics=metrics, curves=curves.curves)
