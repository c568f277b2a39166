"""The `lego_phase1` stage's logic: LEGO's shallow model, trained on train and early-stopped on val."""

from __future__ import annotations

import time

import torch

from cascadelab.config import LegoParams
from cascadelab.data.cell_batches import CellBatches
from cascadelab.data.tokenizer import load_tokenizer
from cascadelab.models.lego import LEGOConfig
from cascadelab.pipeline import lego_common as common
from cascadelab.pipeline.paths import Paths
from cascadelab.training.lego_trainer import train_phase1


def run(params: LegoParams, seed: int, paths: Paths, log_fn: common.LogFn | None = None) -> common.LegoOutcome:
    """Train the shallow ``phase1_layers`` model on train with early stopping on val; save it."""
    corpus_dir, tokenizer_dir, model_dir = paths.corpus, paths.tokenizer, paths.lego_phase1
    torch.set_num_threads(params.num_threads)
    tokenizer = load_tokenizer(tokenizer_dir)
    pad = int(tokenizer.pad_token_id)
    train = CellBatches(common.encoded_split(corpus_dir, "train", tokenizer), params.phase1.batch_size, pad, seed=seed)
    val = CellBatches(common.encoded_split(corpus_dir, "val", tokenizer), params.phase1.eval_batch_size, pad)
    config = params.to_config(tokenizer)
    assert isinstance(config, LEGOConfig)
    curves = common.CurveLog("", log_fn)
    started = time.perf_counter()
    model, result = train_phase1(config, train, val, params.phase1, seed=seed, log_fn=curves)
    seconds = time.perf_counter() - started
    flops = common.causal_training_flops(train.positions, config.depth, common.forward_flops_per_token(config))
    record = {
        "train_tokens": result["train_tokens"],
        "train_positions": train.positions,
        "train_flops": flops,
        "steps": result["steps"],
    }
    common.save_lego(model, tokenizer, model_dir, record)
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
    return common.LegoOutcome(metrics=metrics, curves=curves.curves)
