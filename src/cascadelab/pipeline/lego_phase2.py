"""The `lego_phase2` stage: upper block on the hard examples, exit rule chosen on val, test vs a baseline.

Order of the splits: train trains (phase 2 and the baseline), val chooses (early stopping and the routing
threshold: the lowest whose routed val perplexity is within ``phase2.exit_ppl_tolerance`` of the model's
own full depth), test is read once at the end (the curve at the val-chosen thresholds, greedy exact match
and the per-item rows of the claims). The baseline is a standard causal model of the full depth trained
from scratch on LEGO's training FLOPs (``baseline.budget: compute``) or its supervised tokens (``tokens``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
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
from cascadelab.eval.metrics import correct_items, exact_match_report
from cascadelab.models.lego import LEGOConfig, LEGOTransformer
from cascadelab.models.lego.calibration import threshold_for_ratio
from cascadelab.models.lego.flops import routed_compute_cost
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
from cascadelab.plotting import pyplot, save_figure
from cascadelab.training.lego_trainer import (
    load_hard_examples,
    train_full_depth,
    train_joint_exit,
    train_phase2,
)


def run(params: LegoParams, seed: int, paths: Paths, log_fn: LogFn | None = None) -> LegoOutcome:
    """Grow the shallow model, train the upper block, choose the exit rule on val, compare with a baseline on test."""
    corpus_dir, tokenizer_dir = paths.corpus, paths.tokenizer
    phase1_dir, hard_dir = paths.lego_phase1, paths.lego_hard_examples
    model_dir, baseline_dir = paths.lego, paths.lego_baseline
    torch.set_num_threads(params.num_threads)
    tokenizer = load_tokenizer(tokenizer_dir)
    pad = int(tokenizer.pad_token_id)
    batch = params.eval.batch_size
    shallow = load_lego(phase1_dir)
    phase1_record, hard_record = read_record(phase1_dir), read_record(hard_dir)
    sets = load_hard_examples(hard_dir / HARD_FILE)
    train_items = encoded_split(corpus_dir, "train", tokenizer)
    val = CellBatches(encoded_split(corpus_dir, "val", tokenizer), batch, pad)
    config = shallow.config
    depth, lower = params.model.phase2_layers, config.depth

    curves = CurveLog("upper_", log_fn)
    started = time.perf_counter()
    model, m2 = train_phase2(
        shallow, sets, train_items, val, params.phase2, num_layers=depth, pad_id=pad, seed=seed, log_fn=curves
    )
    phase2_seconds = time.perf_counter() - started
    val_tokens = token_losses(model, val, lower)
    thresholds = curve_thresholds(val_tokens["conf"], params.eval.tradeoff_exit_shares)
    val_curve = exit_curve(val_tokens, thresholds, model.config, lower)
    threshold = choose_threshold(val_curve, params.phase2.exit_ppl_tolerance)
    model.config.routing_threshold = threshold
    per_token = forward_flops_per_token(model.config)
    phase2_flops = m2["train_positions"] * (
        lower * per_token["causal_layer"] + 3.0 * ((depth - lower) * per_token["causal_layer"] + per_token["head"])
    )
    lego_flops = float(phase1_record["train_flops"]) + float(hard_record["collection_flops"]) + phase2_flops
    save_lego(model, tokenizer, model_dir, {"train_flops": lego_flops, "routing_threshold": threshold})

    budget = baseline_budget(params, phase1_record, lego_flops, m2["train_tokens"], config)
    train = CellBatches(train_items, params.baseline.train.batch_size, pad, seed=seed)
    base_curves = CurveLog("baseline_", log_fn)
    started = time.perf_counter()
    loop = params.baseline.train
    if loop.max_steps is not None and loop.decay_fraction:  # lay the schedule's decay over the budget
        per_step = float(phase1_record["train_tokens"]) / max(float(phase1_record.get("steps", 1.0)), 1.0)
        loop = loop.model_copy(update={"max_steps": max(math.ceil(budget / per_step), loop.warmup_steps + 1)})
    baseline, mb = train_full_depth(
        config, train, val, loop, num_layers=depth, max_train_tokens=budget, seed=seed,
        log_fn=base_curves,
    )  # fmt: skip
    baseline_seconds = time.perf_counter() - started
    baseline_flops = causal_training_flops(train.positions, depth, per_token)
    save_lego(baseline, tokenizer, baseline_dir, {"train_flops": baseline_flops, "train_tokens": mb["train_tokens"]})

    joint = None
    if params.baseline.layerskip:
        started = time.perf_counter()
        joint_model, mj = train_joint_exit(
            config, CellBatches(train_items, loop.batch_size, pad, seed=seed), val, loop, num_layers=depth,
            exit_layer=lower, exit_weight=params.baseline.layerskip_exit_weight, max_train_tokens=budget, seed=seed,
        )  # fmt: skip
        joint = _route_on_val(joint_model, val, params, lower, val_curve, threshold)
        joint.metrics.update(
            layerskip_train_seconds=time.perf_counter() - started,
            layerskip_train_tokens=mj["train_tokens"],
            layerskip_steps=mj["steps"],
            layerskip_params=mj["params"],
        )

    with final_evaluation("lego_phase2"):  # test is read once, after every choice was made on val
        test_records = skip_user("lego_phase2", load_split(corpus_dir, "test"), GENERATED_ONLY)
        report, test_curve, items = _test_report(
            model, baseline, tokenizer, test_records, val_curve, params, corpus_dir
        )
        if joint is not None:
            report.update(_joint_test_report(joint, tokenizer, test_records, params, corpus_dir))
    chosen = next(row for row in test_curve if row["threshold"] == threshold)
    metrics: dict[str, Any] = {
        "acc": chosen["acc"],
        "ppl": chosen["ppl"],
        "shallow_ratio": chosen["shallow_ratio"],
        "compute_cost": chosen["compute_cost"],
        "ppl_ratio": chosen["ppl"] / report["baseline_ppl"],
        "ppl_ratio_own_full_depth": chosen["ppl"] / report["full_depth_ppl"],
        "threshold": threshold,
        "val_shallow_ratio": next(r["shallow_ratio"] for r in val_curve if r["threshold"] == threshold),
        "params": int(m2["params"]),
        "trainable_params": int(m2["trainable_params"]),
        "baseline_params": int(mb["params"]),
        "best_val_ppl": m2["best_val_ppl"],
        "steps": int(m2["steps"]),
        "stopped_early": bool(m2["stopped_early"]),
        "train_seconds": phase2_seconds,
        "train_tokens": int(m2["train_tokens"]),
        "lego_train_flops": lego_flops,
        "baseline_budget": params.baseline.budget,
        "baseline_budget_tokens": budget,
        "baseline_train_tokens": int(mb["train_tokens"]),
        "baseline_train_flops": baseline_flops,
        "baseline_flops_ratio": baseline_flops / lego_flops,
        "baseline_train_seconds": baseline_seconds,
        "baseline_steps": int(mb["steps"]),
        "baseline_stopped_early": bool(mb["stopped_early"]),
        **report,
    }
    plot_exit_curve(paths.plots_of("lego_phase2") / "exit_curve.png", val_curve, test_curve, threshold)
    return LegoOutcome(
        metrics=metrics,
        curves={
            **curves.curves,
            **base_curves.curves,
            "tradeoff_val": val_curve,
            "tradeoff": test_curve,
            "items": items,
        },
    )


def plot_exit_curve(
    path: Path, val_curve: Sequence[dict[str, float]], test_curve: Sequence[dict[str, float]], threshold: float
) -> None:
    """PNG of routed perplexity (over the model's own full depth) against the exit share, val and test."""
    plt = pyplot()

    figure, axis = plt.subplots(figsize=(6, 4))
    for name, rows in (("val", val_curve), ("test", test_curve)):
        axis.plot([r["shallow_ratio"] for r in rows], [r["ppl_ratio_full"] for r in rows], marker="o", label=name)
        chosen = next(r for r in rows if r["threshold"] == threshold)
        axis.scatter([chosen["shallow_ratio"]], [chosen["ppl_ratio_full"]], marker="*", s=200, zorder=3)
    axis.set_xlabel("share of response tokens exiting after the lower block")
    axis.set_ylabel("routed ppl / own full-depth ppl")
    axis.set_title("LEGO: exit share vs perplexity (star: val-chosen threshold)")
    axis.grid(alpha=0.3)
    axis.legend()
    save_figure(figure, path)


def baseline_budget(
    params: LegoParams, phase1_record: dict[str, Any], lego_flops: float, phase2_tokens: float, config: LEGOConfig
) -> int:
    """Supervised tokens the full-depth baseline may train on (``baseline.budget``, then the cap).

    ``compute``: as many padded positions as LEGO's training FLOPs buy at full depth, converted to
    supervised tokens with phase 1's supervised-per-position ratio (same corpus, same batching).
    ``tokens``: phase-1 supervised tokens + phase-2 supervised tokens.
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


@torch.no_grad()
def token_losses(model: LEGOTransformer, batches: Iterable[Batch], exit_layer: int) -> dict[str, torch.Tensor]:
    """Per response token, in order: exit confidence, shallow and deep NLL and hits, and the row's batch item.

    One dense pass: a token's deep output does not depend on which other tokens exited (the upper
    layers attend over exit-layer states), so mixing shallow and deep per token is what routed
    inference computes at any threshold.
    """
    model.eval()
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in ("conf", "nll_s", "nll_d", "hit_s", "hit_d", "row")}
    seen = 0
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
        parts["row"].append(mask.nonzero(as_tuple=True)[0] + seen)
        seen += mask.shape[0]
    cat = {k: torch.cat(v) for k, v in parts.items()}
    if cat["conf"].numel() == 0:
        raise ValueError("batches: no response tokens (all labels are -100)")
    return cat


def curve_thresholds(val_conf: torch.Tensor, shares: Sequence[float]) -> list[float]:
    """Thresholds exiting each share of the val tokens, shares ascending; 0 and 1 always (2.0: none exits; 0.0: all)."""
    inner = sorted({s for s in shares if 0.0 < s < 1.0})
    return [2.0, *(threshold_for_ratio(val_conf, 1.0 - s) for s in inner), 0.0]


def exit_curve(
    tokens: dict[str, torch.Tensor], thresholds: Sequence[float], config: LEGOConfig, exit_layer: int
) -> list[dict[str, float]]:
    """Routed acc, ppl, exit share and counted compute at each threshold, from per-token losses."""
    full = math.exp(float(tokens["nll_d"].mean()))
    rows = []
    for threshold in thresholds:
        exited = tokens["conf"] >= threshold
        share = float(exited.double().mean())
        ppl = math.exp(float(torch.where(exited, tokens["nll_s"], tokens["nll_d"]).mean()))
        rows.append(
            {
                "threshold": float(threshold),
                "shallow_ratio": share,
                "compute_cost": routed_compute_cost(config, exit_layer, share),
                "ppl": ppl,
                "ppl_ratio_full": ppl / full,
                "acc": float(torch.where(exited, tokens["hit_s"], tokens["hit_d"]).mean()),
            }
        )
    return rows


def choose_threshold(val_curve: Sequence[dict[str, float]], tolerance: float) -> float:
    """The lowest threshold whose routed val ppl is within ``tolerance`` of full depth (the curve's own)."""
    fits = [row["threshold"] for row in val_curve if row["ppl_ratio_full"] <= tolerance]
    if not fits:
        raise ValueError("val curve: no threshold within the tolerance (full depth is always in it)")
    return min(fits)


def _item_rows(
    records: Sequence[dict[str, Any]], tokens: dict[str, torch.Tensor], exited: torch.Tensor, base: torch.Tensor
) -> list[dict[str, Any]]:
    """Per test item: summed response NLL and token count of routed LEGO and the baseline."""
    nll = torch.where(exited, tokens["nll_s"], tokens["nll_d"])
    n = len(records)
    sums = torch.zeros(n, dtype=torch.float64).index_add_(0, tokens["row"], nll)
    base_sums = torch.zeros(n, dtype=torch.float64).index_add_(0, tokens["row"], base)
    counts = torch.bincount(tokens["row"], minlength=n)
    return [
        {"id": r["id"], "task": r["task"], "routed_nll": float(s), "routed_tokens": int(c), "baseline_nll": float(b),
         "baseline_tokens": int(c)}
        for r, s, b, c in zip(records, sums, base_sums, counts, strict=True)
    ]  # fmt: skip


@torch.no_grad()
def _baseline_nll(baseline: LEGOTransformer, batches: Iterable[Batch]) -> torch.Tensor:
    """Per response token NLL of a full-depth model, in the order of `token_losses`."""
    out = []
    for batch in batches:
        logits = baseline(
            input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask"), use_cache=False
        ).logits
        targets = shifted_targets(batch["labels"])
        mask = targets != IGNORE_INDEX
        out.append(F.cross_entropy(logits[mask].float(), targets[mask], reduction="none").double())
    return torch.cat(out)


def _test_report(
    model: LEGOTransformer,
    baseline: LEGOTransformer,
    tokenizer: PreTrainedTokenizerBase,
    test_records: list[dict[str, Any]],
    val_curve: Sequence[dict[str, float]],
    params: LegoParams,
    corpus_dir: Path,
) -> tuple[dict[str, float], list[dict[str, float]], list[dict[str, Any]]]:
    """Test curve at the val-chosen thresholds, baseline ppl, greedy exact match of both and per-item rows."""
    lower = model.config.exit_points[0]
    pad, batch = int(tokenizer.pad_token_id), params.eval.batch_size
    encoded = encode_records(test_records, tokenizer)
    order = sorted(range(len(encoded)), key=lambda i: encoded[i].cell)  # the order CellBatches yields them in
    test = CellBatches(encoded, batch, pad)
    tokens = token_losses(model, test, lower)
    tokens["row"] = torch.tensor(order)[tokens["row"]]
    test_curve = exit_curve(tokens, [row["threshold"] for row in val_curve], model.config, lower)
    base_nll = _baseline_nll(baseline, test)
    threshold = float(model.config.routing_threshold or 0.0)
    items = _item_rows(test_records, tokens, tokens["conf"] >= threshold, base_nll)
    verifier = CorpusVerifier(load_meta(corpus_dir))
    prompts = [r["prompt"] for r in test_records]
    new = params.eval.max_new_tokens
    lego_out = greedy_outputs(model, tokenizer, prompts, new, batch, routed=True)
    base_out = greedy_outputs(baseline, tokenizer, prompts, new, batch)
    full_out = greedy_outputs(model, tokenizer, prompts, new, batch)
    for row, a, b in zip(
        items,
        correct_items(test_records, lego_out, verifier.verify),
        correct_items(test_records, base_out, verifier.verify),
        strict=True,
    ):
        row["correct"], row["baseline_correct"] = a["correct"], b["correct"]
    report = {
        "baseline_ppl": math.exp(float(base_nll.mean())),
        "full_depth_ppl": test_curve[0]["ppl"],
        "shallow_ppl": test_curve[-1]["ppl"],
        **exact_match_report(test_records, lego_out, verifier.verify),
        **{f"baseline_{k}": v for k, v in exact_match_report(test_records, base_out, verifier.verify).items()},
        **{f"full_depth_{k}": v for k, v in exact_match_report(test_records, full_out, verifier.verify).items()},
    }
    return report, test_curve, items


@dataclass
class JointRouting:
    """The LayerSkip-style model with its thresholds chosen on val: its own rule's and LEGO's exit share's."""

    model: LEGOTransformer
    threshold: float  # lowest within the tolerance of its own full depth (the same rule as LEGO's)
    threshold_at_lego_share: float  # exits the share of val tokens that LEGO's threshold exits
    metrics: dict[str, float]


def _route_on_val(
    model: LEGOTransformer,
    val: Iterable[Batch],
    params: LegoParams,
    exit_layer: int,
    lego_val_curve: Sequence[dict[str, float]],
    lego_threshold: float,
) -> JointRouting:
    """Choose the joint model's thresholds on val: by LEGO's rule, and at LEGO's val exit share."""
    tokens = token_losses(model, val, exit_layer)
    thresholds = curve_thresholds(tokens["conf"], params.eval.tradeoff_exit_shares)
    curve = exit_curve(tokens, thresholds, model.config, exit_layer)
    share = next(r["shallow_ratio"] for r in lego_val_curve if r["threshold"] == lego_threshold)
    at_share = threshold_for_ratio(tokens["conf"], 1.0 - share)
    chosen = choose_threshold(curve, params.phase2.exit_ppl_tolerance)
    model.config.routing_threshold = chosen
    return JointRouting(model, chosen, at_share, {"layerskip_threshold": chosen})


def _joint_test_report(
    joint: JointRouting,
    tokenizer: PreTrainedTokenizerBase,
    test_records: list[dict[str, Any]],
    params: LegoParams,
    corpus_dir: Path,
) -> dict[str, float]:
    """Test figures of the LayerSkip-style model: routed at its own threshold and at LEGO's exit share."""
    model, lower = joint.model, joint.model.config.exit_points[0]
    pad, batch = int(tokenizer.pad_token_id), params.eval.batch_size
    test = CellBatches(encode_records(test_records, tokenizer), batch, pad)
    tokens = token_losses(model, test, lower)
    own, at_share, full = exit_curve(tokens, [joint.threshold, joint.threshold_at_lego_share, 2.0], model.config, lower)
    verifier = CorpusVerifier(load_meta(corpus_dir))
    outputs = greedy_outputs(
        model, tokenizer, [r["prompt"] for r in test_records], params.eval.max_new_tokens, batch, routed=True
    )
    em = exact_match_report(test_records, outputs, verifier.verify)
    return {
        **joint.metrics,
        "layerskip_ppl": own["ppl"],
        "layerskip_shallow_ratio": own["shallow_ratio"],
        "layerskip_compute_cost": own["compute_cost"],
        "layerskip_full_depth_ppl": full["ppl"],
        "layerskip_ppl_at_lego_share": at_share["ppl"],
        "layerskip_shallow_ratio_at_lego_share": at_share["shallow_ratio"],
        **{f"layerskip_{k}": v for k, v in em.items()},
    }
