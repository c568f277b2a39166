"""The `lego_hard_examples` stage's logic: confidence threshold on val, token-level hard examples from train."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch

from cascadelab.config import LegoParams
from cascadelab.data.cell_batches import CellBatches, EncodedRecord
from cascadelab.data.tokenizer import load_tokenizer
from cascadelab.io import atomic_directory, write_json
from cascadelab.models.lego import LEGOTransformer
from cascadelab.models.lego.calibration import exit_confidences
from cascadelab.pipeline.lego_common import (
    HARD_FILE,
    RECORD_FILE,
    LegoOutcome,
    encoded_split,
    forward_flops_per_token,
    load_lego,
)
from cascadelab.pipeline.paths import Paths
from cascadelab.training.lego_trainer import prepare_hard_examples, save_hard_examples


def run(params: LegoParams, seed: int, paths: Paths) -> LegoOutcome:
    """Threshold on val, token-level hard examples from train (and val): pointers to their sequences.

    Writes ``paths.lego_hard_examples/hard_examples.safetensors`` (sequence index, position, target and
    confidence per hard token, capped at ``max_train_rows`` / ``max_val_rows``) and the collection cost.
    """
    corpus_dir, tokenizer_dir = paths.corpus, paths.tokenizer
    phase1_dir, out_dir = paths.lego_phase1, paths.lego_hard_examples
    torch.set_num_threads(params.num_threads)
    hard = params.hard_examples
    tokenizer = load_tokenizer(tokenizer_dir)
    pad = int(tokenizer.pad_token_id)
    model = load_lego(phase1_dir)
    val_items = encoded_split(corpus_dir, "val", tokenizer)
    train_items = encoded_split(corpus_dir, "train", tokenizer)
    started = time.perf_counter()
    sets = prepare_hard_examples(
        model,
        train_items,
        val_items,
        hard_example_ratio=hard.hard_example_ratio,
        batch_size=hard.batch_size,
        pad_id=pad,
        max_train_examples=hard.max_train_rows,
        max_val_examples=hard.max_val_rows,
    )
    seconds = time.perf_counter() - started
    per_token = forward_flops_per_token(model.config)
    positions = sum(len(item.input_ids) for item in train_items)  # batches in corpus order: little padding
    flops = positions * (model.config.depth * per_token["causal_layer"] + per_token["head"])
    threshold = sets["threshold"]
    record = {"collection_flops": flops, "threshold": threshold, "hard_example_ratio": hard.hard_example_ratio}
    with atomic_directory(out_dir) as tmp:
        size = save_hard_examples(tmp / HARD_FILE, sets)
        write_json(tmp / RECORD_FILE, record)
    n_train, n_val = sets["train"]["targets"].numel(), sets["val"]["targets"].numel()
    metrics: dict[str, Any] = {
        "threshold": threshold,
        "train_rows": n_train,
        "val_rows": n_val,
        "train_rows_capped": n_train >= hard.max_train_rows,
        "bytes": size,
        "seconds": seconds,
        "collection_flops": flops,
    }
    per_cell, confidences = _val_hard_shares(model, val_items, threshold, hard.batch_size, pad)
    metrics.update(per_cell)
    return LegoOutcome(metrics=metrics, curves={"confidence": _histogram(confidences, threshold)})


def _val_hard_shares(
    model: LEGOTransformer, items: Sequence[EncodedRecord], threshold: float, batch_size: int, pad: int
) -> tuple[dict[str, float], torch.Tensor]:
    """Share of val response tokens below the threshold, overall and per task; all val confidences."""
    tasks = sorted({item.cell.rstrip("0123456789") for item in items})
    shares: dict[str, float] = {}
    every = []
    for task in tasks:
        chosen = [item for item in items if item.cell.rstrip("0123456789") == task]
        conf = exit_confidences(model, CellBatches(chosen, batch_size, pad))
        shares[f"val_hard_share_{task}"] = float((conf < threshold).float().mean())
        every.append(conf)
    confidences = torch.cat(every)
    shares["val_hard_share"] = float((confidences < threshold).float().mean())
    return shares, confidences


def _histogram(confidences: torch.Tensor, threshold: float, bins: int = 20) -> list[dict[str, float]]:
    """Share of val response tokens per confidence bin, and whether the bin lies below the threshold."""
    counts = torch.histc(confidences.float(), bins=bins, min=0.0, max=1.0)
    total = max(int(confidences.numel()), 1)
    return [
        {"confidence": (i + 0.5) / bins, "share": float(c) / total, "hard": float((i + 0.5) / bins < threshold)}
        for i, c in enumerate(counts.tolist())
    ]
