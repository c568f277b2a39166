"""The arms of the growth study (issue 25), each one run on the same training-FLOP budget and batches.

* S: the small static model (one expert per layer); L: the large static model (`study.large_experts`).
* G: S grown by function-preserving splits of every expert at fixed budget fractions (dense routing, exact),
  Adam moments duplicated, router bias −log 2 per copy, tiny noise, a short re-warm-up; none of ACOC's extras.
* A: full ACOC (`acoc_trainer.ACOCController`): adaptive triggers (stagnation, saturation, vote), the
  penalty, forced routing and the new-tensor rate during its warm-up, the soup, EWC and replay as set.

A run's bytes depend only on (arm, seed, params): the model is initialised from the seed, every arm draws
step i's batch from the same per-seed schedule and streams, and each run sets its own thread count.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from cascadelab.config import ACOCParams
from cascadelab.data.batches import LMBatch
from cascadelab.data.task_streams import TaskBatches
from cascadelab.models.acoc.accounting import count_parameters
from cascadelab.models.acoc.flops import train_flops
from cascadelab.training.acoc_budget import BudgetEngine, BudgetPlan, study_schedule
from cascadelab.training.acoc_eval import VerifyFn, exact_match, test_items
from cascadelab.training.acoc_trainer import ACOCController, build_model

Record = dict[str, Any]
SIGNALS = ("stagnation", "saturation", "vote")


@dataclass
class StudyData:
    """What every arm of every seed reads: tokenizer, train streams, fixed val batches, test records, judge."""

    tokenizer: PreTrainedTokenizerBase
    train: Mapping[str, TaskBatches]
    val: Mapping[str, Sequence[LMBatch]]
    test: Mapping[str, Sequence[Record]]
    verify: VerifyFn


@dataclass
class ArmRun:
    """One arm on one seed: its val curve against FLOPs, its events, final metrics and per-item test results."""

    arm: str
    seed: int
    curve: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    items: list[dict[str, Any]] = field(default_factory=list)


ABLATIONS: dict[str, dict[str, dict[str, Any]]] = {  # extra -> the settings that switch it off
    "penalty": {"penalty": {"alpha": 0.0, "beta": 0.0}},
    "forced_routing": {"warmup": {"force_share": 0.0}},
    "new_lr": {"warmup": {"lr_multiplier": 1.0}},
    "soup": {"vote": {"soup": False}},
    "ewc": {"continual": {"ewc_lambda": 0.0}},
    "replay": {"continual": {"replay_weight": 0.0}},
}


def arm_order(arm: str) -> tuple[int, str]:
    """Sort key: S, L, G, A, then A's ablations by name."""
    return "SLGA".index(arm[0]), arm


def ablated(params: ACOCParams, arm: str) -> ACOCParams:
    """A's settings with the extra named by `A-<extra>` switched off (`params` itself for any other arm)."""
    if not arm.startswith("A-"):
        return params
    update = {
        section: getattr(params, section).model_copy(update=values)
        for section, values in ABLATIONS[arm.removeprefix("A-")].items()
    }
    return params.model_copy(update=update)


def arm_experts(params: ACOCParams, arm: str) -> int:
    """Experts per layer an arm starts with."""
    return params.study.large_experts if arm == "L" else params.model.initial_experts if arm[0] == "A" else 1


def budget_flops(params: ACOCParams, tokenizer: PreTrainedTokenizerBase) -> float:
    """The budget: `study.budget_large_steps` steps of L at the nominal sequence length."""
    config = params.model.model_copy(update={"initial_experts": params.study.large_experts}).to_config(tokenizer)
    return float(params.study.budget_large_steps * train_flops(config, params.batch_size, params.study.nominal_seq_len))


def step_flops(params: ACOCParams, tokenizer: PreTrainedTokenizerBase, experts: int) -> int:
    """Training FLOPs of one nominal step of a static model with `experts` experts per layer."""
    config = params.model.model_copy(update={"initial_experts": experts}).to_config(tokenizer)
    return train_flops(config, params.batch_size, params.study.nominal_seq_len)


def _plan(params: ACOCParams, tokenizer: PreTrainedTokenizerBase, seed: int) -> BudgetPlan:
    budget = budget_flops(params, tokenizer)
    # The smallest model takes the most steps; twice its nominal count covers batches longer than nominal.
    steps = 2 * math.ceil(budget / step_flops(params, tokenizer, 1)) + 100
    study = params.study
    schedule = study_schedule(list(params.tasks), seed, steps)
    return BudgetPlan(budget, schedule, study.eval_every, study.rewarmup_steps, study.decay_after_growth)


def arm_settings(params: ACOCParams, arm: str, plan: BudgetPlan) -> ACOCParams:
    """The ACOC settings an arm's engine runs under (S/L/G: one cycle over the whole schedule)."""
    model = params.model.model_copy(update={"initial_experts": arm_experts(params, arm)})
    growth = params.growth.model_copy(update={"max_experts": max(params.growth.max_experts, model.initial_experts)})
    update: dict[str, Any] = {"model": model, "growth": growth, "val_items_per_task": params.study.val_items_per_task}
    if arm[0] == "A":
        update["cycles"] = math.ceil(len(plan.schedule) / params.steps_per_cycle)
    else:
        update |= {"cycles": 1, "steps_per_cycle": len(plan.schedule)}
    return params.model_copy(update=update)


def run_arm(
    arm: str, seed: int, params: ACOCParams, data: StudyData, save_dir: Path | None = None, threads: int = 1
) -> ArmRun:
    """Train `arm` on `seed` to the FLOP budget, score the test items once, save the model to `save_dir`."""
    torch.set_num_threads(threads)
    started, started_cpu = time.perf_counter(), time.process_time()
    plan = _plan(params, data.tokenizer, seed)
    settings = arm_settings(ablated(params, arm), arm, plan)
    model = build_model(settings.model, data.tokenizer, seed)
    engine = BudgetEngine(arm, model, settings, data.train, data.val, seed, plan)
    engine.record()
    run = ArmRun(arm, seed)
    if arm == "G":
        generator = torch.Generator().manual_seed(seed + 15485863)
        for fraction in params.study.growth_fractions:
            engine.train_until(fraction * plan.budget_flops)
            run.events.append(engine.grow(params.study.split_noise, generator))
        engine.train_until(plan.budget_flops)
    elif arm[0] == "A":
        run.events, extra = _adaptive(engine, seed)
        run.metrics.update(extra)
    else:
        engine.train_until(plan.budget_flops)
    engine.record()
    engine.end_warmup()
    model.eval()
    run.curve = engine.curve
    run.items = test_items(model, data.tokenizer, data.test, data.verify, params.max_new_tokens, params.eval_batch_size)
    run.metrics.update(exact_match(run.items, list(data.test)))
    run.metrics.update(
        {
            "val_loss": engine.curve[-1]["val_loss"],
            "params": float(count_parameters(model).total),
            "experts_final": float(sum(model.config.experts_per_layer)),
            "train_flops": engine.flops,
            "budget_flops": plan.budget_flops,
            "train_steps": float(engine.step),
            "train_tokens": float(engine.train_tokens),
            "train_seconds": engine.train_seconds,
            "run_seconds": time.perf_counter() - started,
            "run_cpu_seconds": time.process_time() - started_cpu,
        }
    )
    if save_dir is not None:
        model.save_pretrained(str(save_dir))
        data.tokenizer.save_pretrained(str(save_dir))
    return run


def _adaptive(engine: BudgetEngine, seed: int) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """ACOC's cycle loop until the budget is spent; its events and the count of every signal and change."""
    controller = ACOCController(engine, seed)
    cycle = 0
    while not engine.spent:
        engine.stop_flops = engine.plan.budget_flops
        controller.run_cycle(cycle)
        cycle += 1
    events = controller.events
    decisions = [e for e in events if e["type"] == "decision"]
    counts: dict[str, float] = {"cycles": float(cycle)}
    for signal in SIGNALS:
        counts[f"signal_{signal}"] = float(sum(bool(e["signals"][signal]) for e in decisions))
    for kind in ("split", "widen", "prune", "merge"):
        counts[f"{kind}s"] = float(sum(e["type"] == kind for e in events))
    counts["expansions_decided"] = float(sum(bool(e["expand"]) for e in decisions))
    return [_jsonable(e) for e in events], counts


def _jsonable(event: Mapping[str, Any]) -> dict[str, Any]:
    """An event with tensors and other objects turned into plain values."""
    convert: Callable[[Any], Any] = lambda v: v if isinstance(v, (int, float, str, bool, type(None))) else str(v)  # noqa: E731
    return {k: (v if isinstance(v, (list, dict)) else convert(v)) for k, v in event.items()}
