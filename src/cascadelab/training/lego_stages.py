"""The LEGO stages' logic on the shared corpus: phase 1, hard examples, phase 2 against a baseline.

Splits are kept apart as the issue asks: phase 1 trains on train and early-stops on val; the
confidence threshold is calibrated on val and the hard examples are collected from train (val hard
examples only drive phase 2's early stopping); everything reported as ``test`` is measured on test.

The full-depth baseline (a standard causal model of ``phase2_layers`` layers, trained from scratch)
gets LEGO's training budget, counted as ``baseline.budget`` says: ``compute`` (forward + backward
FLOPs of phase 1, the hard-example collection pass and phase 2) or ``tokens`` (phase-1 supervised
tokens + phase-2 hard-example rows, the library's definition).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from transformers import PreTrainedTokenizerBase

from cascadelab.config import LegoLoopParams, LegoParams
from cascadelab.data.batches import Batch
from cascadelab.data.cell_batches import CellBatches, EncodedRecord, encode_records
from cascadelab.data.corpus import CorpusVerifier, load_meta, load_split
from cascadelab.data.tokenizer import load_tokenizer
from cascadelab.eval.generation import greedy_outputs
from cascadelab.eval.metrics import exact_match_report
from cascadelab.io import atomic_directory, write_json
from cascadelab.models.lego import (
    IGNORE_INDEX,
    LEGOConfig,
    LEGOTransformer,
    exit_confidences,
    shifted_targets,
    threshold_for_ratio,
)
from cascadelab.training.lego_trainer import (
    LoopSettings,
    Trainer,
    create_standard_config,
    load_hard_examples,
    prepare_hard_examples,
    save_hard_examples,
    train_full_depth,
    train_phase1,
    train_phase2,
)

HARD_FILE = "hard_examples.safetensors"
RECORD_FILE = "lego_training.json"  # what a later LEGO stage needs to know about how this one trained
LogFn = Callable[[dict[str, float], int], None]


@dataclass
class LegoOutcome:
    """Metrics of one LEGO stage and its curves (name → rows, one TSV file each)."""

    metrics: dict[str, Any]
    curves: dict[str, list[dict[str, float]]] = field(default_factory=dict)


class _Curves:
    """Collects a training loop's log calls into curves and forwards them to ``log_fn``.

    Rows go to ``<prefix>val`` when they hold a val metric, else ``<prefix>train``; with ``name``
    set, all rows go to that one curve.
    """

    def __init__(self, prefix: str, log_fn: LogFn | None, step_name: str = "step", name: str | None = None) -> None:
        self.prefix, self.log_fn, self.step_name, self.name = prefix, log_fn, step_name, name
        self.curves: dict[str, list[dict[str, float]]] = {}

    def __call__(self, metrics: dict[str, float], step: int) -> None:
        name = self.name or ("val" if any(k.startswith("val") for k in metrics) else "train")
        self.curves.setdefault(f"{self.prefix}{name}", []).append({self.step_name: float(step), **metrics})
        if self.log_fn is not None:
            self.log_fn({f"{self.prefix}{k}": v for k, v in metrics.items()}, step)


# --------------------------------------------------------------------------- shared set-up


def lego_config(params: LegoParams, tokenizer: PreTrainedTokenizerBase) -> LEGOConfig:
    """The phase-1 LEGOConfig of the params: architecture, phase-1 settings, the tokenizer's special ids.

    Phase-2 settings are left at the seed defaults here and set by :func:`phase2_config`, so the
    phase-1 artifact does not depend on them.
    """
    m = params.model
    return LEGOConfig(
        vocab_size=len(tokenizer),
        hidden_size=m.hidden_size,
        intermediate_size=m.intermediate_size,
        num_attention_heads=m.num_heads,
        max_position_embeddings=m.max_position_embeddings,
        initializer_range=m.initializer_range,
        phase1_layers=m.phase1_layers,
        phase1_lr=params.phase1.learning_rate,
        phase1_patience=params.phase1.patience,
        phase2_layers=m.phase2_layers,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )


def phase2_config(params: LegoParams, shallow: LEGOConfig, hard_example_ratio: float) -> LEGOConfig:
    """The shallow model's config with the phase-2 settings of the params."""
    return shallow.derive(
        phase2_layers=params.model.phase2_layers,
        phase2_lr=params.phase2.learning_rate,
        phase2_patience=params.phase2.patience,
        hard_example_ratio=hard_example_ratio,
    )


def loop_settings(loop: LegoLoopParams, max_train_tokens: int | None = None) -> LoopSettings:
    """The library's loop settings for a causal run (lr and patience travel in the LEGOConfig)."""
    return LoopSettings(
        max_epochs=loop.max_epochs,
        eval_every=loop.eval_every,
        max_steps=loop.max_steps,
        max_train_tokens=max_train_tokens,
        warmup_steps=loop.warmup_steps,
        weight_decay=loop.weight_decay,
        grad_clip=loop.grad_clip,
        log_every=loop.log_every,
    )


def _encoded(corpus_dir: Path, split: str, tokenizer: PreTrainedTokenizerBase) -> list[EncodedRecord]:
    return encode_records(load_split(corpus_dir, split), tokenizer)


def _load_lego(path: Path) -> LEGOTransformer:
    model = LEGOTransformer.from_pretrained(str(path))
    if not isinstance(model, LEGOTransformer):
        raise ValueError(f"{path}: not a LEGO model ({type(model).__name__})")
    return model.eval()


def _save(model: LEGOTransformer, tokenizer: PreTrainedTokenizerBase, folder: Path, record: dict[str, Any]) -> None:
    with atomic_directory(folder) as tmp:
        model.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
        write_json(tmp / RECORD_FILE, record)


def _read_record(folder: Path) -> dict[str, Any]:
    path = folder / RECORD_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing (rerun the stage that writes {folder})")
    return dict(json.loads(path.read_text()))


# --------------------------------------------------------------------------- compute accounting


def forward_flops_per_token(config: LEGOConfig) -> dict[str, float]:
    """Forward FLOPs per token of a causal layer, a token-wise layer and an exit head (matmuls only)."""
    d, f = config.hidden_size, config.intermediate_size
    return {
        "causal_layer": 2.0 * (4 * d * d + 3 * d * f),
        "token_layer": 2.0 * (d * d + 3 * d * f),
        "head": 2.0 * d * config.vocab_size,
    }


def causal_training_flops(positions: int, layers: int, per_token: dict[str, float]) -> float:
    """Forward + backward (3x forward) FLOPs of training a causal model on ``positions`` padded positions."""
    return 3.0 * positions * (layers * per_token["causal_layer"] + per_token["head"])


# --------------------------------------------------------------------------- phase 1


def run_lego_phase1(
    params: LegoParams,
    seed: int,
    corpus_dir: Path,
    tokenizer_dir: Path,
    model_dir: Path,
    log_fn: LogFn | None = None,
) -> LegoOutcome:
    """Train the shallow ``phase1_layers`` model on train with early stopping on val; save it."""
    torch.set_num_threads(params.num_threads)
    tokenizer = load_tokenizer(tokenizer_dir)
    pad = int(tokenizer.pad_token_id)
    train = CellBatches(_encoded(corpus_dir, "train", tokenizer), params.phase1.batch_size, pad, seed=seed)
    val = CellBatches(_encoded(corpus_dir, "val", tokenizer), params.phase1.eval_batch_size, pad)
    config = lego_config(params, tokenizer)
    curves = _Curves("", log_fn)
    started = time.perf_counter()
    model, result = train_phase1(config, train, val, loop_settings(params.phase1), seed=seed, log_fn=curves)
    seconds = time.perf_counter() - started
    flops = causal_training_flops(train.positions, config.phase1_layers, forward_flops_per_token(config))
    record = {"train_tokens": result["train_tokens"], "train_positions": train.positions, "train_flops": flops}
    _save(model, tokenizer, model_dir, record)
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


# --------------------------------------------------------------------------- hard examples


def run_lego_hard_examples(
    params: LegoParams,
    seed: int,
    corpus_dir: Path,
    tokenizer_dir: Path,
    phase1_dir: Path,
    out_dir: Path,
) -> LegoOutcome:
    """Threshold on val, token-level hard examples from train (and val, for phase-2 early stopping).

    Writes ``out_dir/hard_examples.safetensors`` (fp16 states, capped at ``max_train_rows`` /
    ``max_val_rows``) and the collection cost. Train batches are shuffled, so a cap samples every
    cell instead of the first ones.
    """
    torch.set_num_threads(params.num_threads)
    hard = params.hard_examples
    tokenizer = load_tokenizer(tokenizer_dir)
    pad = int(tokenizer.pad_token_id)
    model = _load_lego(phase1_dir)
    val_items = _encoded(corpus_dir, "val", tokenizer)
    train = CellBatches(_encoded(corpus_dir, "train", tokenizer), hard.batch_size, pad, seed=seed)
    val = CellBatches(val_items, hard.batch_size, pad)
    started = time.perf_counter()
    sets = prepare_hard_examples(
        model,
        train,
        val,
        hard_example_ratio=hard.hard_example_ratio,
        max_train_examples=hard.max_train_rows,
        max_val_examples=hard.max_val_rows,
    )
    seconds = time.perf_counter() - started
    per_token = forward_flops_per_token(model.config)
    flops = train.positions * (model.config.depth * per_token["causal_layer"] + per_token["head"])
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


# --------------------------------------------------------------------------- phase 2


def run_lego_phase2(
    params: LegoParams,
    seed: int,
    corpus_dir: Path,
    tokenizer_dir: Path,
    phase1_dir: Path,
    hard_dir: Path,
    model_dir: Path,
    baseline_dir: Path,
    log_fn: LogFn | None = None,
) -> LegoOutcome:
    """Grow the shallow model, train the upper block on the hard examples, compare with a baseline.

    Routing threshold: calibrated on val for ``phase2.exit_share`` of the response tokens to exit at
    the lower block, or the hard-example threshold when unset. Reports routed test ``acc``, ``ppl``,
    ``shallow_ratio``, ``compute_cost`` and greedy exact match, and the same for the baseline.
    """
    torch.set_num_threads(params.num_threads)
    tokenizer = load_tokenizer(tokenizer_dir)
    pad = int(tokenizer.pad_token_id)
    batch = params.eval.batch_size
    shallow = _load_lego(phase1_dir)
    phase1_record = _read_record(phase1_dir)
    hard_record = _read_record(hard_dir)
    sets = load_hard_examples(hard_dir / HARD_FILE)
    val = CellBatches(_encoded(corpus_dir, "val", tokenizer), batch, pad)
    test_records = load_split(corpus_dir, "test")
    test = CellBatches(encode_records(test_records, tokenizer), batch, pad)
    config = phase2_config(params, shallow.config, float(hard_record["hard_example_ratio"]))
    for key in ("phase2_layers", "phase2_lr", "phase2_patience", "hard_example_ratio"):
        setattr(shallow.config, key, getattr(config, key))  # extend_from copies them into the saved model
    val_conf = exit_confidences(shallow, val)
    share = params.phase2.exit_share
    threshold = sets["threshold"] if share is None else threshold_for_ratio(val_conf, 1.0 - share)

    curves = _Curves("", log_fn, step_name="epoch", name="upper")
    started = time.perf_counter()
    loop = LoopSettings(max_epochs=params.phase2.max_epochs, grad_clip=params.phase2.grad_clip)
    model, m2 = train_phase2(
        shallow,
        sets,
        test,
        loop,
        config=config,
        routing_threshold=threshold,
        batch_size=params.phase2.batch_size,
        seed=seed,
        log_fn=curves,
    )
    phase2_seconds = time.perf_counter() - started
    per_token = forward_flops_per_token(config)
    upper = config.phase2_layers - shallow.config.depth
    phase2_flops = 3.0 * m2["train_tokens"] * (upper * per_token["token_layer"] + per_token["head"])
    lego_flops = float(phase1_record["train_flops"]) + float(hard_record["collection_flops"]) + phase2_flops
    _save(model, tokenizer, model_dir, {"train_flops": lego_flops, "routing_threshold": threshold})

    budget = baseline_budget(params, phase1_record, lego_flops, m2["train_tokens"], config)
    train = CellBatches(_encoded(corpus_dir, "train", tokenizer), params.baseline.train.batch_size, pad, seed=seed)
    base_config = config.derive(
        phase1_lr=params.baseline.train.learning_rate, phase1_patience=params.baseline.train.patience
    )
    base_curves = _Curves("baseline_", log_fn)
    started = time.perf_counter()
    baseline, mb = train_full_depth(
        base_config, train, val, loop_settings(params.baseline.train, budget), seed=seed, log_fn=base_curves
    )
    baseline_seconds = time.perf_counter() - started
    baseline_flops = causal_training_flops(train.positions, config.phase2_layers, per_token)
    _save(baseline, tokenizer, baseline_dir, {"train_flops": baseline_flops, "train_tokens": mb["train_tokens"]})

    report, tradeoff = _test_report(model, baseline, tokenizer, test_records, test, val_conf, params, corpus_dir)
    metrics: dict[str, Any] = {
        "acc": m2["test_acc"],
        "ppl": m2["test_ppl"],
        "shallow_ratio": m2["test_shallow_ratio"],
        "compute_cost": m2["test_compute_cost"],
        "ppl_ratio": m2["test_ppl"] / report["baseline_ppl"],
        "threshold": threshold,
        "params": int(m2["params"]),
        "trainable_params": int(m2["trainable_params"]),
        "baseline_params": int(mb["params"]),
        "best_val_hard_ppl": m2["best_val_hard_ppl"],
        "epochs": int(m2["epochs"]),
        "train_seconds": phase2_seconds,
        "train_tokens": int(m2["train_tokens"]),
        "train_tokens_per_s": m2["train_tokens"] / phase2_seconds if phase2_seconds else 0.0,
        "lego_train_flops": lego_flops,
        "baseline_budget_tokens": budget,
        "baseline_train_tokens": int(mb["train_tokens"]),
        "baseline_train_flops": baseline_flops,
        "baseline_train_seconds": baseline_seconds,
        "baseline_steps": int(mb["steps"]),
        "baseline_train_tokens_per_s": train.tokens / baseline_seconds if baseline_seconds else 0.0,
        **report,
    }
    return LegoOutcome(metrics=metrics, curves={**curves.curves, **base_curves.curves, "tradeoff": tradeoff})


def baseline_budget(
    params: LegoParams, phase1_record: dict[str, Any], lego_flops: float, phase2_tokens: float, config: LEGOConfig
) -> int:
    """Supervised tokens the full-depth baseline may train on (``baseline.budget``, then the cap).

    ``compute``: as many padded positions as LEGO's training FLOPs buy at full depth, converted to
    supervised tokens with phase 1's supervised-per-position ratio (same corpus, same batching).
    ``tokens``: phase-1 supervised tokens + phase-2 hard-example rows.
    """
    if params.baseline.budget == "compute":
        positions = lego_flops / causal_training_flops(1, config.phase2_layers, forward_flops_per_token(config))
        per_position = float(phase1_record["train_tokens"]) / max(float(phase1_record["train_positions"]), 1.0)
        budget = int(positions * per_position)
    else:
        budget = int(float(phase1_record["train_tokens"]) + phase2_tokens)
    cap = params.baseline.max_train_tokens
    return budget if cap is None else min(budget, cap)


def _test_report(
    model: LEGOTransformer,
    baseline: LEGOTransformer,
    tokenizer: PreTrainedTokenizerBase,
    test_records: list[dict[str, Any]],
    test: CellBatches,
    val_conf: torch.Tensor,
    params: LegoParams,
    corpus_dir: Path,
) -> tuple[dict[str, float], list[dict[str, float]]]:
    """Baseline test metrics, the routed exit-share trade-off and greedy exact match of both models.

    The trade-off's ends are full depth (share 0, a threshold above 1) and the shallow model (share
    1, threshold 0); its other thresholds are calibrated on val like the routing threshold.
    """
    depth, lower = model.config.depth, model.config.exit_points[0]
    base_eval = Trainer(create_standard_config(depth), model.config.vocab_size).evaluate(baseline, test)
    shares = sorted({0.0, 1.0, *params.eval.tradeoff_exit_shares})
    thresholds = [2.0 if s == 0 else 0.0 if s == 1 else threshold_for_ratio(val_conf, 1.0 - s) for s in shares]
    tradeoff = [
        {"exit_share": share, **row, "ppl_ratio": row["ppl"] / base_eval["ppl"]}
        for share, row in zip(shares, exit_tradeoff(model, test, thresholds, lower), strict=True)
    ]
    verifier = CorpusVerifier(load_meta(corpus_dir))
    prompts = [r["prompt"] for r in test_records]
    new, batch = params.eval.max_new_tokens, params.eval.batch_size
    lego_em = exact_match_report(
        test_records, greedy_outputs(model, tokenizer, prompts, new, batch, routed=True), verifier.verify
    )
    base_em = exact_match_report(
        test_records, greedy_outputs(baseline, tokenizer, prompts, new, batch), verifier.verify
    )
    report = {
        "baseline_acc": base_eval["acc"],
        "baseline_ppl": base_eval["ppl"],
        "shallow_ppl": tradeoff[-1]["ppl"],
        "full_depth_ppl": tradeoff[0]["ppl"],
        **lego_em,
        **{f"baseline_{k}": v for k, v in base_em.items()},
    }
    return report, tradeoff


@torch.no_grad()
def exit_tradeoff(
    model: LEGOTransformer, batches: Iterable[Batch], thresholds: Sequence[float], exit_layer: int
) -> list[dict[str, float]]:
    """Teacher-forced routed metrics at each threshold, from one pass that keeps both exits' logits.

    The upper layers are token-wise, so a token's deep logits do not depend on which other tokens
    were routed: mixing shallow and deep per-token losses gives what ``forward_inference`` would, at
    the cost of one full pass for the whole curve. Rows: threshold, acc, ppl, shallow_ratio,
    compute_cost (response tokens only).
    """
    model.eval()
    depth = model.config.depth
    parts: dict[str, list[torch.Tensor]] = {"conf": [], "nll_s": [], "nll_d": [], "hit_s": [], "hit_d": []}
    for batch in batches:
        out = model.forward_train(batch["input_ids"], batch.get("attention_mask"), exit_layer)
        targets = shifted_targets(batch["labels"])
        mask = targets != IGNORE_INDEX
        gold = targets[mask]
        for name, logits in (("s", out.shallow_logits[mask].float()), ("d", out.deep_logits[mask].float())):
            parts[f"nll_{name}"].append(F.cross_entropy(logits, gold, reduction="none").double())
            parts[f"hit_{name}"].append((logits.argmax(-1) == gold).double())
            if name == "s":
                parts["conf"].append(F.softmax(logits, dim=-1).amax(dim=-1))
    cat = {k: torch.cat(v) for k, v in parts.items()}
    if cat["conf"].numel() == 0:
        raise ValueError("batches: no response tokens (all labels are -100)")
    rows = []
    for threshold in thresholds:
        exited = cat["conf"] >= threshold
        share = float(exited.double().mean())
        rows.append(
            {
                "threshold": float(threshold),
                "acc": float(torch.where(exited, cat["hit_s"], cat["hit_d"]).mean()),
                "ppl": math.exp(float(torch.where(exited, cat["nll_s"], cat["nll_d"]).mean())),
                "shallow_ratio": share,
                "compute_cost": (exit_layer + (depth - exit_layer) * (1.0 - share)) / depth,
            }
        )
    return rows
