"""The `lego_phase2` stage's logic: the upper block on the hard examples, routed test evaluation vs a baseline.

The full-depth baseline (a standard causal model of ``phase2_layers`` layers, trained from scratch)
gets LEGO's training budget, counted as ``baseline.budget`` says: ``compute`` (forward + backward
FLOPs of phase 1, the hard-example collection pass and phase 2) or ``tokens`` (phase-1 supervised
tokens + phase-2 hard-example rows, the library's definition).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from transformers import PreTrainedTokenizerBase

from cascadelab.config import LegoParams
from cascadelab.data.batches import Batch
from cascadelab.data.cell_batches import CellBatches, encode_records
from cascadelab.data.corpus import CorpusVerifier, load_meta, load_split
from cascadelab.data.held_out import final_evaluation
from cascadelab.data.tokenizer import load_tokenizer
from cascadelab.data.user_task import GENERATED_ONLY, skip_user
from cascadelab.eval.generation import greedy_outputs
from cascadelab.eval.metrics import exact_match_report
from cascadelab.models.lego import LEGOConfig, LEGOTransformer
from cascadelab.models.lego.calibration import exit_confidences, threshold_for_ratio
from cascadelab.models.lego.modeling_lego import IGNORE_INDEX, shifted_targets
from cascadelab.pipeline.lego_common import (
    HARD_FILE,
    CurveLog,
    LegoOutcome,
    LogFn,
    causal_training_flops,
    encoded_split,
    forward_flops_per_token,
    load_lego,
    read_record,
    save_lego,
)
from cascadelab.pipeline.paths import Paths
from cascadelab.training.lego_trainer import (
    Trainer,
    load_hard_examples,
    standard_stages,
    train_full_depth,
    train_phase2,
)


def run(params: LegoParams, seed: int, paths: Paths, log_fn: LogFn | None = None) -> LegoOutcome:
    """Grow the shallow model, train the upper block on the hard examples, compare with a baseline.

    Routing threshold: calibrated on val for ``phase2.exit_share`` of the response tokens to exit at
    the lower block, or the hard-example threshold when unset. Reports routed test ``acc``, ``ppl``,
    ``shallow_ratio``, ``compute_cost`` and greedy exact match, and the same for the baseline.
    """
    corpus_dir, tokenizer_dir = paths.corpus, paths.tokenizer
    phase1_dir, hard_dir = paths.lego_phase1, paths.lego_hard_examples
    model_dir, baseline_dir = paths.lego, paths.lego_baseline
    torch.set_num_threads(params.num_threads)
    tokenizer = load_tokenizer(tokenizer_dir)
    pad = int(tokenizer.pad_token_id)
    batch = params.eval.batch_size
    shallow = load_lego(phase1_dir)
    phase1_record = read_record(phase1_dir)
    hard_record = read_record(hard_dir)
    sets = load_hard_examples(hard_dir / HARD_FILE)
    val = CellBatches(encoded_split(corpus_dir, "val", tokenizer), batch, pad)
    with final_evaluation("lego_phase2"):  # scored only after training: train_phase2's end and _test_report
        test_records = skip_user("lego_phase2", load_split(corpus_dir, "test"), GENERATED_ONLY)
    test = CellBatches(encode_records(test_records, tokenizer), batch, pad)
    config = shallow.config
    depth = params.model.phase2_layers
    val_conf = exit_confidences(shallow, val)
    share = params.phase2.exit_share
    threshold = sets["threshold"] if share is None else threshold_for_ratio(val_conf, 1.0 - share)

    curves = CurveLog("", log_fn, step_name="epoch", name="upper")
    started = time.perf_counter()
    model, m2 = train_phase2(
        shallow, sets, test, params.phase2, num_layers=depth, routing_threshold=threshold, seed=seed, log_fn=curves
    )
    phase2_seconds = time.perf_counter() - started
    per_token = forward_flops_per_token(config)
    upper = depth - shallow.config.depth
    phase2_flops = 3.0 * m2["train_tokens"] * (upper * per_token["token_layer"] + per_token["head"])
    lego_flops = float(phase1_record["train_flops"]) + float(hard_record["collection_flops"]) + phase2_flops
    record = {"train_flops": lego_flops, "routing_threshold": threshold, "phase2": params.phase2.model_dump()}
    save_lego(model, tokenizer, model_dir, record)

    budget = baseline_budget(params, phase1_record, lego_flops, m2["train_tokens"], config)
    train = CellBatches(encoded_split(corpus_dir, "train", tokenizer), params.baseline.train.batch_size, pad, seed=seed)
    base_curves = CurveLog("baseline_", log_fn)
    started = time.perf_counter()
    baseline, mb = train_full_depth(
        config,
        train,
        val,
        params.baseline.train,
        num_layers=depth,
        max_train_tokens=budget,
        seed=seed,
        log_fn=base_curves,
    )
    baseline_seconds = time.perf_counter() - started
    baseline_flops = causal_training_flops(train.positions, depth, per_token)
    save_lego(baseline, tokenizer, baseline_dir, {"train_flops": baseline_flops, "train_tokens": mb["train_tokens"]})

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
        depth = params.model.phase2_layers
        positions = lego_flops / causal_training_flops(1, depth, forward_flops_per_token(config))
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
    base_eval = Trainer(standard_stages(depth), model.config.vocab_size).evaluate(baseline, test)
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
