"""The ACOC cycle loop: train → checkpoint → evaluate → decide → expand → warm up, and its static baselines.

Each cycle trains the fixed architecture for `steps_per_cycle` steps on a task schedule (task families
enter at their cycle; afterwards older tasks keep `continual.old_task_share` of the batches), saves a
checkpoint, measures validation loss/accuracy per task and per-expert saturation, runs the variant vote
(which may merge a model soup), then decides from three signals — loss stagnation, saturation and the
vote — whether to expand. Pruning of unused experts and consolidation of near-identical ones happen at
the same point. An expansion splits the most loaded expert of each layer (Net2Net, router logit −log 2)
or widens it (Net2WiderNet); the validation loss right before and after every structural change is
recorded. The next `warmup.steps` steps give the new tensors `lr × warmup.lr_multiplier` through their
own optimizer param group, and the router sends `warmup.force_share` of the tokens to the new experts.
The double penalty (`training/acoc/penalty.py`) is added to the loss at every step; once a second task
family has arrived the router is protected by EWC and routing replay (`training/acoc/continual.py`).

Every decision is an event (a dict with `type`, `cycle`, `step` and its reasons); `history` has one row
per cycle. The static baselines train on exactly the same batches for the same number of steps.

Departures from the analysis' prototype: cycles are counted in steps (not minutes) so reruns are
byte-identical; the vote's score is the geometric-mean probability of the validation targets,
exp(−loss); an expansion needs `growth.min_signals` of the three signals rather than the vote alone.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from cascadelab.config import ACOCModelParams, ACOCParams
from cascadelab.data.batches import LMBatch
from cascadelab.data.task_streams import TaskBatches, group_records
from cascadelab.models.acoc import ACOCConfig, ACOCForCausalLM
from cascadelab.models.acoc.accounting import count_parameters, unique_parameters
from cascadelab.models.acoc.growth import (
    StructureChange,
    merge_experts,
    prune_expert,
    similar_pairs,
    split_expert,
    widen_expert,
)
from cascadelab.training.acoc.continual import (
    RouterEWC,
    RoutingReplay,
    active_tasks,
    forgetting,
    new_tasks,
    stage_tasks,
)
from cascadelab.training.acoc.penalty import GrowthPenalty
from cascadelab.training.acoc.saturation import ExpertSaturation, measure_saturation
from cascadelab.training.acoc.variants import vote_and_merge
from cascadelab.training.acoc_eval import VerifyFn, evaluate_tasks, evaluate_test, test_items
from cascadelab.training.callbacks import TrainerCallback
from cascadelab.training.schedules import GroupRateSchedule, decay_factor, warmup_factor
from cascadelab.training.trainer import LMTrainer, LossStats, StepSettings

Record = dict[str, Any]
LogFn = Callable[[dict[str, float], int], None]


# --------------------------------------------------------------------------------------------- results
@dataclass
class RunResult:
    """A trained model with its per-cycle history, events and final metrics."""

    name: str
    model: ACOCForCausalLM
    history: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class ACOCResult(RunResult):
    """The grown model's run, plus the static baselines when they were trained."""

    baselines: dict[str, RunResult] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------- building
def build_model(
    params: ACOCModelParams,
    tokenizer: PreTrainedTokenizerBase,
    seed: int,
    expert_widths: list[list[list[int]]] | None = None,
    device: str | torch.device = "cpu",
) -> ACOCForCausalLM:
    """A fresh ACOC model sized by `params` (or by `expert_widths`), initialised from `seed`, on `device`."""
    config = params.to_config(tokenizer, expert_widths)
    assert isinstance(config, ACOCConfig)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ACOCForCausalLM(config)
    nn.Module.to(model, device)  # PreTrainedModel.to is typed for the dtype/device wrapper
    return model


def task_schedule(settings: ACOCParams, cycle: int, seed: int) -> list[str]:
    """The task of every step of `cycle`: the current stage's tasks, older ones with `old_task_share`."""
    stage, older = stage_tasks(settings.tasks, cycle)
    rng = random.Random(f"{seed}:acoc-schedule:{cycle}")
    share = settings.continual.old_task_share
    return [
        rng.choice(older) if older and rng.random() < share else rng.choice(stage)
        for _ in range(settings.steps_per_cycle)
    ]


# --------------------------------------------------------------------------------------------- engine
@dataclass(eq=False)
class CycleEngine:
    """Trains one model on the scheduled batch stream: optimizer groups, WSD schedule, warmup, accounting.

    Each cycle is one run of the LM trainer (:class:`~cascadelab.training.trainer.LMTrainer`) that continues the
    step count; ACOC supplies its loss (`compute_loss`) and its per-step records (`_CycleSteps`). Between cycles
    the optimizer is rebuilt over the changed structure, carrying the Adam moments over.
    `extra_loss(task)` (optional) returns a tensor added to the LM loss and a dict of logged values; the
    ACOC loop uses it for the growth penalty and the router protection.
    """

    name: str
    model: ACOCForCausalLM
    settings: ACOCParams
    train_batches: Mapping[str, TaskBatches]
    val: Mapping[str, Sequence[LMBatch]]
    seed: int
    log_fn: LogFn | None = None

    def __post_init__(self) -> None:
        missing = [t for t in self.settings.tasks if t not in self.train_batches or t not in self.val]
        if missing:
            raise ValueError(f"tasks.{missing[0]}: no train or val batches for this task")
        self.streams = {task: self.train_batches[task].stream(self.seed) for task in self.settings.tasks}
        self.step = 0
        self.param_steps = 0
        self.train_tokens = 0
        self.train_seconds = 0.0
        self.train_cpu_seconds = 0.0
        self.warmup_left = 0
        self.warm_params: list[nn.Parameter] = []
        self.extra_loss: Callable[[str], tuple[torch.Tensor, dict[str, float]]] | None = None
        self.step_record = _StepRecord("", 0.0, {})
        self.force_generator = torch.Generator().manual_seed(self.seed + 7919)
        self._params_now = count_parameters(self.model).total
        self.callbacks: list[TrainerCallback] = []  # extra trainer callbacks of every cycle (e.g. the FLOP meter)
        self.build_optimizer([])

    # -- optimizer
    def build_optimizer(self, new_params: Sequence[nn.Parameter], multiplier: float = 1.0) -> None:
        """AdamW over the current parameters (`optimizer`, with its `rates`); `new_params` get their own group with
        `lr_mult = multiplier`.

        Adam moments of parameters that already existed are carried over.
        """
        new_ids = {id(p) for p in new_params}
        params = unique_parameters(self.model)
        groups: list[dict[str, Any]] = [
            {"params": [p for p in params if id(p) not in new_ids], "lr_mult": 1.0, "name": "base"}
        ]
        if new_ids:
            groups.append({"params": [p for p in params if id(p) in new_ids], "lr_mult": multiplier, "name": "new"})
        optimizer = torch.optim.AdamW(groups, lr=self.settings.learning_rate, weight_decay=self.settings.weight_decay)
        old = getattr(self, "optimizer", None)
        if old is not None:
            for param in params:
                if param in old.state:
                    optimizer.state[param] = old.state[param]
        self.optimizer = optimizer
        self.rates = GroupRateSchedule(optimizer, self.lr_at, start_step=self.step)

    def lr_at(self, step: int) -> float:
        """Warmup-stable-decay: linear warmup, constant, linear decay to 0 over the last `decay_fraction`.

        Unlike `wsd_factor`, the warm-up and the decay multiply where they overlap.
        """
        s = self.settings
        warm = s.learning_rate * warmup_factor(step, max(1, s.lr_warmup_steps))
        return warm * decay_factor(step, s.total_steps, s.decay_fraction)

    def _apply_lr(self) -> None:
        """Set the param groups' rates for the next step (after a group's `lr_mult` changed)."""
        self.rates.seek(self.step)

    def structure_changed(self) -> None:
        """Rebuild the optimizer after a structural edit (keeping a running warmup group) and refresh the size."""
        alive = {id(p) for p in self.model.parameters()}
        self.warm_params = [p for p in self.warm_params if id(p) in alive] if self.warmup_left else []
        self.build_optimizer(self.warm_params, self.settings.warmup.lr_multiplier)
        self._params_now = count_parameters(self.model).total

    # -- warmup
    def start_warmup(self, changes: Sequence[StructureChange]) -> None:
        """Give the tensors created by `changes` a ×lr_multiplier group and force routing to new experts."""
        warmup = self.settings.warmup
        self.warm_params = [p for change in changes for p in change.new_params]
        self.build_optimizer(self.warm_params, warmup.lr_multiplier)
        self._params_now = count_parameters(self.model).total
        for moe in self.model.moe_layers:
            moe.force_experts, moe.force_share = [], 0.0
        for change in changes:
            if change.new_expert is not None and change.kind == "split":
                moe = self.model.moe_layers[change.layer]
                moe.force_experts.append(change.new_expert)
                moe.force_share = warmup.force_share
                moe.force_generator = self.force_generator
        self.warmup_left = warmup.steps
        if self.warmup_left == 0:
            self.end_warmup()

    def end_warmup(self) -> None:
        """Back to one learning rate for every tensor; the router routes freely again."""
        for group in self.optimizer.param_groups:
            group["lr_mult"] = 1.0
        for moe in self.model.moe_layers:
            moe.force_experts, moe.force_share = [], 0.0
        self.warmup_left = 0
        self.warm_params = []
        self._apply_lr()

    # -- training
    def compute_loss(self, model: ACOCForCausalLM, item: tuple[str, LMBatch]) -> tuple[torch.Tensor, LossStats]:
        """`compute_loss` of the LM trainer: the LM loss plus `extra_loss` of the batch's task; stats: its tokens."""
        task, batch = item
        out = model(
            input_ids=batch.input_ids, attention_mask=batch.attention_mask, labels=batch.labels, use_cache=False
        )
        assert out.loss is not None
        loss = out.loss
        logged: dict[str, float] = {}
        if self.extra_loss is not None:
            extra, logged = self.extra_loss(task)
            loss = loss + extra
        self.step_record = _StepRecord(task, float(out.loss.detach()), logged)
        return loss, {"tokens": batch.num_tokens}

    def cycle_schedule(self, cycle: int) -> list[str]:
        """The task of every step of `cycle` (a subclass may draw them from a run-long schedule)."""
        return task_schedule(self.settings, cycle, self.seed)

    def train_cycle(self, cycle: int) -> dict[str, float]:
        """Train the cycle's schedule (`steps_per_cycle` steps); returns mean train loss per task."""
        s = self.settings
        schedule = self.cycle_schedule(cycle)
        steps = _CycleSteps(self)
        trainer = LMTrainer(
            self.model,
            [self.optimizer],
            StepSettings(max_steps=self.step + len(schedule), max_grad_norm=s.max_grad_norm, logging_steps=s.log_every),
            out_dir=None,
            compute_loss=self.compute_loss,
            callbacks=[steps, *self.callbacks],
            schedulers=[self.rates],
            start_step=self.step,
        )
        batches = ((task, next(self.streams[task]).to(self.model.device)) for task in schedule)
        self.optimizer.zero_grad(set_to_none=True)  # the trainer clears gradients after each step, not before
        start, start_cpu = time.perf_counter(), time.process_time()
        result = trainer.fit(batches)
        self.train_seconds += time.perf_counter() - start
        self.train_cpu_seconds += time.process_time() - start_cpu
        self.train_tokens += result.train_tokens
        return {task: sum(v) / len(v) for task, v in steps.losses.items()}

    def evaluate(self, tasks: Sequence[str]) -> dict[str, Any]:
        """Validation loss and accuracy per task (and means) on the fixed validation batches."""
        return evaluate_tasks(self.model, self.val, tasks)


@dataclass(frozen=True)
class _StepRecord:
    """What `compute_loss` saw of the last step: its task, LM loss (without the extra loss) and logged figures."""

    task: str
    lm_loss: float
    logged: dict[str, float]


class _CycleSteps(TrainerCallback):
    """Per step of a cycle: the engine's step and parameter-step counts, the warm-up countdown, the logged rows."""

    def __init__(self, engine: CycleEngine) -> None:
        self.engine = engine
        self.losses: dict[str, list[float]] = {}
        self.window: list[float] = []

    def on_step_end(self, trainer: LMTrainer, step: int, loss: float) -> None:
        """Count the step; end a finished warm-up; every `log_every` steps send the window's row to `log_fn`."""
        engine = self.engine
        engine.step = step
        engine.param_steps += engine._params_now
        record = engine.step_record
        self.losses.setdefault(record.task, []).append(record.lm_loss)
        self.window.append(record.lm_loss)
        if engine.warmup_left:
            engine.warmup_left -= 1
            if engine.warmup_left == 0:
                engine.end_warmup()
        if engine.log_fn is not None and step % engine.settings.log_every == 0:
            metrics = {
                "train_loss": sum(self.window) / len(self.window),
                "lr": engine.lr_at(step - 1),
                "params": float(engine._params_now),
                **record.logged,
            }
            engine.log_fn({f"{engine.name}/{k}": v for k, v in metrics.items()}, step)
            self.window = []


# --------------------------------------------------------------------------------------------- ACOC loop
class ACOCController:
    """Decides, expands, prunes and consolidates between cycles; records every decision as an event."""

    def __init__(self, engine: CycleEngine, seed: int, checkpoint_dir: Path | None = None) -> None:
        self.engine = engine
        self.model = engine.model
        self.settings = engine.settings
        self.generator = torch.Generator().manual_seed(seed)
        self.protect_seed = seed + 104729
        self.checkpoint_dir = checkpoint_dir
        self.events: list[dict[str, Any]] = []
        self.history: list[dict[str, Any]] = []
        self.scores: list[float] = []
        self.previous_losses: dict[str, float] = {}
        self.low_usage: dict[int, int] = {}
        self.born: dict[int, int] = {id(e): 0 for moe in self.model.moe_layers for e in moe.expert_list()}
        self.acc_before: dict[str, tuple[float, int]] = {}  # old task -> (val acc when a new task arrived, cycle)
        self.penalty: GrowthPenalty | None = None
        p = self.settings.penalty
        if p.alpha > 0 or p.beta > 0:
            self.penalty = GrowthPenalty(p, count_parameters(self.model).total)
        self.ewc = RouterEWC(self.settings.continual.ewc_lambda)
        self.replay = RoutingReplay(self.settings.continual.replay_tokens)
        self.protecting = False
        self.protect_tasks: list[str] = []
        engine.extra_loss = self.extra_loss

    # -- events
    def event(self, event_type: str, cycle: int, **fields: Any) -> dict[str, Any]:
        """Record one event (also returned)."""
        record = {"type": event_type, "cycle": cycle, "step": self.engine.step, **fields}
        self.events.append(record)
        return record

    # -- losses added at every step
    def extra_loss(self, task: str) -> tuple[torch.Tensor, dict[str, float]]:
        """Growth penalty + router EWC + routing replay for the batch just forwarded."""
        total = torch.zeros((), device=self.model.device)
        logged: dict[str, float] = {}
        if self.penalty is not None:
            penalty, info = self.penalty(self.model, task)
            total = total + penalty
            logged["penalty"] = float(penalty.detach())
            logged.update(info)
        if self.protecting:
            ewc = self.ewc.penalty(self.model)
            replay = self.settings.continual.replay_weight * self.replay.loss(self.model)
            total = total + ewc + replay
            logged["ewc"], logged["replay"] = float(ewc.detach()), float(replay.detach())
        return total, logged

    # -- helpers
    def _saturation(self, tasks: Sequence[str]) -> list[list[ExpertSaturation]]:
        per_task = max(1, self.settings.saturation.batches // len(tasks))
        batches = [b for t in tasks for b in list(self.engine.val[t])[:per_task]]
        return measure_saturation(self.model, batches, self.settings.saturation)

    def _val_loss(self, tasks: Sequence[str]) -> float:
        return float(self.engine.evaluate(tasks)["loss"])

    def _old_task_batches(self, tasks: Sequence[str]) -> list[LMBatch]:
        count = self.settings.continual.fisher_batches
        streams = {t: self.engine.train_batches[t].stream(self.protect_seed) for t in tasks}
        return [next(streams[tasks[i % len(tasks)]]) for i in range(count)]

    def _after_structure_change(self) -> None:
        self.engine.structure_changed()
        if self.penalty is not None:
            self.penalty.reset_usage()
        if self.protecting:
            self.ewc.fit(self.model, self._old_task_batches(self.protect_tasks))
            self.replay.refresh(self.model)

    def _apply(
        self, change_fn: Callable[[], StructureChange], tasks: Sequence[str], cycle: int, reason: str, before: float
    ) -> tuple[StructureChange, float]:
        change = change_fn()
        after = self._val_loss(tasks)
        self.event(
            change.kind,
            cycle,
            reason=reason,
            val_loss_before=before,
            val_loss_after=after,
            relative_change=(after - before) / before,
            **change.to_event(),
        )
        if change.new_expert is not None:
            self.born[id(self.model.moe_layers[change.layer].expert(change.new_expert))] = cycle
        return change, after

    # -- structural decisions
    def expand(
        self, sat: list[list[ExpertSaturation]], tasks: Sequence[str], cycle: int, reason: str
    ) -> list[StructureChange]:
        """Split (or widen) the most loaded expert of every layer (or of the most saturated layer)."""
        g = self.settings.growth
        layers = list(range(len(sat)))
        if not g.all_layers:
            layers = [max(layers, key=lambda layer: max(s.score for s in sat[layer]))]
        changes: list[StructureChange] = []
        before = self._val_loss(tasks)
        for layer in layers:
            moe = self.model.moe_layers[layer]
            target = max(range(len(sat[layer])), key=lambda e: sat[layer][e].load)
            width = sum(moe.expert(target).widths)
            can_split = moe.num_experts < g.max_experts and g.kind in ("auto", "split")
            can_widen = width + g.widen_by <= g.max_width and g.kind in ("auto", "widen")
            if can_split:
                edit = partial(split_expert, self.model, layer, target, self.generator, g.split_noise)
            elif can_widen:
                edit = partial(widen_expert, self.model, layer, target, g.widen_by, self.generator, g.split_noise)
            else:
                self.event("no_capacity", cycle, layer=layer, expert=target, reason="max_experts and max_width reached")
                continue
            change, before = self._apply(edit, tasks, cycle, reason, before)
            changes.append(change)
        if changes:
            self._after_structure_change()
            self.engine.start_warmup(changes)
            warmup = self.settings.warmup
            self.event(
                "warmup",
                cycle,
                steps=warmup.steps,
                lr_multiplier=warmup.lr_multiplier,
                force_share=warmup.force_share,
                new_param_count=sum(p.numel() for c in changes for p in c.new_params),
            )
        return changes

    def prune(self, sat: list[list[ExpertSaturation]], tasks: Sequence[str], cycle: int) -> list[StructureChange]:
        """Prune experts whose load × gate stayed under `prune_usage` for `prune_patience` cycles."""
        g = self.settings.growth
        changes = []
        for layer, stats in enumerate(sat):
            moe = self.model.moe_layers[layer]
            gates = moe.gates().detach()
            for e in reversed(range(moe.num_experts)):
                key = id(moe.expert(e))
                usage = stats[e].load * float(gates[e])
                self.low_usage[key] = self.low_usage.get(key, 0) + 1 if usage < g.prune_usage else 0
                if self.low_usage[key] >= g.prune_patience and moe.num_experts > 1:
                    reason = f"usage {usage:.4f} < {g.prune_usage} for {self.low_usage[key]} cycles"
                    edit = partial(prune_expert, self.model, layer, e)
                    change, _ = self._apply(edit, tasks, cycle, reason, self._val_loss(tasks))
                    changes.append(change)
                    self.low_usage.pop(key)  # ids of deleted modules can be reused
                    self.born.pop(key, None)
        return changes

    def consolidate(self, sat: list[list[ExpertSaturation]], tasks: Sequence[str], cycle: int) -> list[StructureChange]:
        """Merge the most similar pair of each layer when its cosine similarity reaches the threshold."""
        g = self.settings.growth
        young = {
            (layer, e)
            for layer, moe in enumerate(self.model.moe_layers)
            for e, expert in enumerate(moe.expert_list())
            if cycle - self.born.get(id(expert), 0) < g.consolidate_min_age
        }
        changes = []
        done: set[int] = set()
        for layer, a, b, similarity in similar_pairs(self.model, g.consolidate_threshold, young):
            if layer in done:
                continue
            done.add(layer)
            la, lb = sat[layer][a].load, sat[layer][b].load
            weight_a = la / (la + lb) if la + lb > 0 else 0.5
            reason = f"cosine similarity {similarity:.3f} >= {g.consolidate_threshold}"
            edit = partial(merge_experts, self.model, layer, a, b, weight_a)
            change, _ = self._apply(edit, tasks, cycle, reason, self._val_loss(tasks))
            changes.append(change)
        return changes

    # -- continual tasks
    def on_new_tasks(self, cycle: int, arriving: list[str], tasks: list[str]) -> list[StructureChange]:
        """Record old-task accuracy, protect the router, and give the new family its own expert."""
        old = [t for t in tasks if t not in arriving]
        evals = self.engine.evaluate(old)
        for task in old:
            self.acc_before.setdefault(task, (evals["tasks"][task]["acc"], cycle))
        self.event("new_task", cycle, tasks=arriving, old_tasks=old, old_acc={t: evals["tasks"][t]["acc"] for t in old})
        c = self.settings.continual
        if c.ewc_lambda > 0 or (c.replay_tokens > 0 and c.replay_weight > 0):
            self.protect_tasks = old
            batches = self._old_task_batches(old)
            self.ewc.fit(self.model, batches)
            self.replay.collect(self.model, batches, self.generator)
            self.protecting = True
            self.event("protect_router", cycle, tasks=old, ewc_lambda=c.ewc_lambda, replay_tokens=len(self.replay))
        if c.expand_on_new_task:
            return self.expand(self._saturation(tasks), tasks, cycle, reason=f"new task family: {', '.join(arriving)}")
        return []

    # -- one cycle
    def run_cycle(self, cycle: int) -> dict[str, Any]:
        """train → checkpoint → evaluate → decide → expand (→ warm up during the next cycle)."""
        s, g = self.settings, self.settings.growth
        tasks = active_tasks(s.tasks, cycle)
        arriving = new_tasks(s.tasks, cycle)
        if self.penalty is not None:
            self.penalty.add_tasks(self.model, tasks)
        changes: list[StructureChange] = []
        if arriving:
            changes += self.on_new_tasks(cycle, arriving, tasks)
        params_start = count_parameters(self.model).total
        train_losses = self.engine.train_cycle(cycle)
        if self.checkpoint_dir is not None:
            self.model.save_pretrained(self.checkpoint_dir / f"cycle_{cycle:02d}")
        evals = self.engine.evaluate(tasks)
        losses = {t: evals["tasks"][t]["loss"] for t in tasks}
        score = math.exp(-evals["loss"])
        self.scores.append(score)
        sat = self._saturation(tasks)
        val = {t: self.engine.val[t] for t in tasks}
        vote = vote_and_merge(
            self.model, lambda m: math.exp(-evaluate_tasks(m, val, tasks)["loss"]), self.scores, s.vote, self.generator
        )
        self.event("vote", cycle, **vote.to_dict())
        # decide
        common = [t for t in tasks if t in self.previous_losses]
        improvement = None
        if common:
            before = sum(self.previous_losses[t] for t in common)
            improvement = (before - sum(losses[t] for t in common)) / before
        stagnating = improvement is not None and improvement < g.stagnation_tol
        max_sat = max(x.score for layer in sat for x in layer)
        saturated = max_sat >= g.saturation_threshold
        signals = {"stagnation": stagnating, "saturation": saturated, "vote": vote.expand}
        last_cycle = cycle == s.cycles - 1
        expand = sum(signals.values()) >= g.min_signals and not last_cycle
        reasons = [
            f"val loss improvement {improvement:.4f} {'<' if stagnating else '>='} {g.stagnation_tol}"
            if improvement is not None
            else "no previous val loss",
            f"max saturation {max_sat:.3f} {'>=' if saturated else '<'} {g.saturation_threshold}",
            f"{vote.expand_votes}/{len(vote.votes)} variants below {vote.threshold:.4f}",
        ]
        if last_cycle:
            reasons.append("last cycle: no expansion")
        self.event(
            "decision",
            cycle,
            expand=expand,
            signals=signals,
            reasons=reasons,
            min_signals=g.min_signals,
            improvement=improvement,
            max_saturation=max_sat,
            expand_votes=vote.expand_votes,
        )
        relaxed = {}
        if self.penalty is not None:
            for task in common:
                if (self.previous_losses[task] - losses[task]) / self.previous_losses[task] < g.stagnation_tol:
                    relaxed[task] = self.penalty.relax(task)
            if relaxed:
                self.event("relax_thresholds", cycle, thresholds=relaxed, reason="task loss stagnates")
        self.previous_losses = losses
        prunes = self.prune(sat, tasks, cycle)
        merges = self.consolidate(sat, tasks, cycle) if not prunes else []
        if prunes or merges:
            self._after_structure_change()
            sat = self._saturation(tasks)
        expansions = self.expand(sat, tasks, cycle, reason="; ".join(reasons)) if expand else []
        changes += expansions
        counts = count_parameters(self.model)
        row = {
            "cycle": cycle,
            "step": self.engine.step,
            "tasks": tasks,
            "params_start": params_start,
            "params": counts.total,
            "experts": counts.num_experts,
            "expert_widths": [list(map(sum, layer)) for layer in self.model.config.expert_widths],
            "gates": [[round(float(x), 4) for x in moe.gates().detach()] for moe in self.model.moe_layers],
            "parameter_steps": self.engine.param_steps,
            "train_loss": train_losses,
            "val_loss": losses,
            "val_acc": {t: evals["tasks"][t]["acc"] for t in tasks},
            "val_loss_mean": evals["loss"],
            "score": score,
            "saturation": [[x.to_dict() for x in layer] for layer in sat],
            "max_saturation": max_sat,
            "vote": vote.to_dict(),
            "signals": signals,
            "decision": "expand" if expand else "keep",
            "reasons": reasons,
            "expansions": [_change_summary(self.events, c) for c in changes if c.kind in ("split", "widen")],
            "prunes": [c.to_event() for c in prunes],
            "merges": [c.to_event() for c in merges],
            "thresholds": dict(self.penalty.thresholds) if self.penalty else {},
        }
        self.history.append(row)
        return row


def _change_summary(events: Sequence[dict[str, Any]], change: StructureChange) -> dict[str, Any]:
    """The recorded event of `change` (losses right before and after it included)."""
    for event in reversed(events):
        if event["type"] == change.kind and event["layer"] == change.layer and event["experts"] == change.experts:
            return {
                k: event[k]
                for k in (
                    "kind",
                    "layer",
                    "experts",
                    "new_expert",
                    "val_loss_before",
                    "val_loss_after",
                    "relative_change",
                    "params_before",
                    "params_after",
                )
            }
    return change.to_event()


# --------------------------------------------------------------------------------------------- entry points
@dataclass(frozen=True)
class RunInputs:
    """What the grown model and its static baselines share: batches, test records, judge, logging, seed, device."""

    train_batches_by_task: Mapping[str, TaskBatches]
    val_batches_by_task: Mapping[str, TaskBatches | Sequence[LMBatch]]
    test_records: Sequence[Record]
    tokenizer: PreTrainedTokenizerBase
    verify: VerifyFn
    log_fn: LogFn | None = None
    seed: int = 0
    device: str | torch.device = "cpu"


def _test_records(settings: ACOCParams, test_records: Sequence[Record]) -> dict[str, list[Record]]:
    grouped = group_records(test_records, list(settings.tasks))
    return {task: records[: settings.test_items_per_task] for task, records in grouped.items()}


def _val_batches(settings: ACOCParams, val: Mapping[str, TaskBatches | Sequence[LMBatch]]) -> dict[str, list[LMBatch]]:
    out = {}
    for task in settings.tasks:
        if task not in val:
            raise ValueError(f"tasks.{task}: no validation batches for this task")
        source = val[task]
        out[task] = source.fixed(settings.val_items_per_task) if isinstance(source, TaskBatches) else list(source)
    return out


def _final_metrics(
    engine: CycleEngine,
    history: Sequence[dict[str, Any]],
    acc_before: Mapping[str, tuple[float, int]],
    tokenizer: PreTrainedTokenizerBase,
    test: Mapping[str, Sequence[Record]],
    verify: VerifyFn,
) -> dict[str, float]:
    s = engine.settings
    items = test_items(engine.model, tokenizer, test, verify, s.max_new_tokens, s.eval_batch_size)
    metrics = evaluate_test(engine.model, tokenizer, test, items, s.eval_batch_size)
    final = history[-1]["val_acc"]
    # Forgetting (Chaudhry et al. 2018): an old task's best validation accuracy, from the moment a newer
    # task arrived on, minus its final accuracy.
    peak = {
        task: max([before] + [row["val_acc"][task] for row in history[start:] if task in row["val_acc"]])
        for task, (before, start) in acc_before.items()
    }
    metrics.update(
        {
            "params": float(count_parameters(engine.model).total),
            "parameter_steps": float(engine.param_steps),
            "train_steps": float(engine.step),
            "train_tokens": float(engine.train_tokens),
            "train_seconds": engine.train_seconds,
            "train_cpu_seconds": engine.train_cpu_seconds,
            "val_loss": float(history[-1]["val_loss_mean"]),
        }
    )
    if peak:
        metrics["forgetting"] = 100.0 * forgetting(peak, final)
        for task, best in peak.items():
            metrics[f"forgetting_{task}"] = 100.0 * max(0.0, best - final[task])
    return metrics


def run_acoc(
    settings: ACOCParams,
    train_batches_by_task: Mapping[str, TaskBatches],
    val_batches_by_task: Mapping[str, TaskBatches | Sequence[LMBatch]],
    test_records: Sequence[Record],
    tokenizer: PreTrainedTokenizerBase,
    verify: VerifyFn,
    log_fn: LogFn | None = None,
    seed: int = 0,
    checkpoint_dir: Path | None = None,
    device: str | torch.device = "cpu",
) -> ACOCResult:
    """Grow an ACOC model through `settings.cycles` cycles; with `settings.baselines`, also train the baselines.

    `train_batches_by_task` / `val_batches_by_task` come from `task_batches.build_task_batches` (one entry per
    task key of `settings.tasks`); `verify(task, output, answer)` checks a generated answer. Per-cycle
    metrics go to `log_fn` under `acoc/cycle/...` with the cycle index as step.
    """
    torch.set_num_threads(settings.num_threads)
    started, started_cpu = time.perf_counter(), time.process_time()
    val = _val_batches(settings, val_batches_by_task)
    test = _test_records(settings, test_records)
    model = build_model(settings.model, tokenizer, seed, device=device)
    engine = CycleEngine("acoc", model, settings, train_batches_by_task, val, seed, log_fn)
    controller = ACOCController(engine, seed, checkpoint_dir)
    controller.event(
        "start",
        0,
        params=count_parameters(model).total,
        experts=model.config.experts_per_layer,
        tasks=dict(settings.tasks),
        total_steps=settings.total_steps,
    )
    for cycle in range(settings.cycles):
        row = controller.run_cycle(cycle)
        if log_fn is not None:
            log_fn(_cycle_metrics(row), cycle)
    engine.end_warmup()
    model.eval()
    metrics = _final_metrics(engine, controller.history, controller.acc_before, tokenizer, test, verify)
    changes = [e for e in controller.events if e["type"] in ("split", "widen")]
    metrics.update(
        {
            "params_initial": float(controller.history[0]["params_start"]),
            "expansions": float(len(changes)),
            "prunes": float(sum(e["type"] == "prune" for e in controller.events)),
            "merges": float(sum(e["type"] == "merge" for e in controller.events)),
            "max_expansion_jump": max((e["relative_change"] for e in changes), default=0.0),
            "experts_final": float(sum(model.config.experts_per_layer)),
            "run_seconds": time.perf_counter() - started,
            "run_cpu_seconds": time.process_time() - started_cpu,
        }
    )
    result = ACOCResult("acoc", model, controller.history, controller.events, metrics)
    if settings.baselines:
        inputs = RunInputs(train_batches_by_task, val, test_records, tokenizer, verify, log_fn, seed, device)
        result.baselines = run_baselines(result, settings, inputs)
    return result


def _cycle_metrics(row: Mapping[str, Any]) -> dict[str, float]:
    metrics = {
        "acoc/cycle/params": float(row["params"]),
        "acoc/cycle/val_loss": float(row["val_loss_mean"]),
        "acoc/cycle/experts": float(sum(row["experts"])),
        "acoc/cycle/max_saturation": float(row["max_saturation"]),
        "acoc/cycle/expand_votes": float(row["vote"]["expand_votes"]),
        "acoc/cycle/expanded": float(row["decision"] == "expand"),
    }
    for task, loss in row["val_loss"].items():
        metrics[f"acoc/cycle/val_loss_{task}"] = float(loss)
        metrics[f"acoc/cycle/val_acc_{task}"] = float(row["val_acc"][task])
    return metrics


def history_rows(history: Sequence[Mapping[str, Any]]) -> list[dict[str, float]]:
    """Flat per-cycle rows (for a DVC plots TSV): params, experts, val loss/accuracy per task, votes, growth."""
    rows = []
    for row in history:
        flat = {
            "cycle": float(row["cycle"]),
            "step": float(row["step"]),
            "params": float(row["params"]),
            "val_loss": float(row["val_loss_mean"]),
        }
        if "experts" in row:
            flat["experts"] = float(sum(row["experts"]))
            flat["max_saturation"] = float(row["max_saturation"])
            flat["expand_votes"] = float(row["vote"]["expand_votes"])
            flat["expanded"] = float(row["decision"] == "expand")
        for task, loss in row["val_loss"].items():
            flat[f"val_loss_{task}"] = float(loss)
            flat[f"val_acc_{task}"] = float(row["val_acc"][task])
        rows.append(flat)
    return rows


def train_static(
    name: str, settings: ACOCParams, expert_widths: list[list[list[int]]] | None, inputs: RunInputs
) -> RunResult:
    """Train a fixed-architecture model (initial size, or `expert_widths`) on the ACOC batch stream."""
    val = _val_batches(settings, inputs.val_batches_by_task)
    model = build_model(settings.model, inputs.tokenizer, inputs.seed, expert_widths, inputs.device)
    engine = CycleEngine(name, model, settings, inputs.train_batches_by_task, val, inputs.seed, inputs.log_fn)
    history: list[dict[str, Any]] = []
    acc_before: dict[str, tuple[float, int]] = {}
    started, started_cpu = time.perf_counter(), time.process_time()
    for cycle in range(settings.cycles):
        tasks = active_tasks(settings.tasks, cycle)
        arriving = new_tasks(settings.tasks, cycle)
        if arriving:
            old = [t for t in tasks if t not in arriving]
            evals = engine.evaluate(old)
            for task in old:
                acc_before.setdefault(task, (evals["tasks"][task]["acc"], cycle))
        train_losses = engine.train_cycle(cycle)
        evals = engine.evaluate(tasks)
        history.append(
            {
                "cycle": cycle,
                "step": engine.step,
                "tasks": tasks,
                "params": count_parameters(model).total,
                "parameter_steps": engine.param_steps,
                "train_loss": train_losses,
                "val_loss_mean": evals["loss"],
                "val_loss": {t: evals["tasks"][t]["loss"] for t in tasks},
                "val_acc": {t: evals["tasks"][t]["acc"] for t in tasks},
            }
        )
    model.eval()
    test = _test_records(settings, inputs.test_records)
    metrics = _final_metrics(engine, history, acc_before, inputs.tokenizer, test, inputs.verify)
    metrics["run_seconds"] = time.perf_counter() - started
    metrics["run_cpu_seconds"] = time.process_time() - started_cpu
    return RunResult(name, model, history, [], metrics)


def run_baselines(result: RunResult, settings: ACOCParams, inputs: RunInputs) -> dict[str, RunResult]:
    """The two static baselines: the initial size, and a static MoE of the grown model's final size."""
    return {
        "static_initial": train_static("static_initial", settings, None, inputs),
        "static_final": train_static("static_final", settings, result.model.config.expert_widths, inputs),
    }


def comparison(result: ACOCResult) -> list[dict[str, Any]]:
    """One row per model (acoc, static_initial, static_final) with the final metrics."""
    runs: list[RunResult] = [result, *result.baselines.values()]
    return [{"model": run.name, **run.metrics} for run in runs]


def bars(result: ACOCResult) -> dict[str, float | bool]:
    """The issue's bars, measured: accuracy vs both baselines, parameter-steps, expansion jumps, forgetting."""
    acoc = result.metrics
    out: dict[str, float | bool] = {"max_expansion_jump_pct": 100.0 * acoc["max_expansion_jump"]}
    out["expansion_jump_ok"] = out["max_expansion_jump_pct"] <= 1.0
    initial, final = result.baselines.get("static_initial"), result.baselines.get("static_final")
    if initial is not None and final is not None:
        out["em_gain_vs_initial"] = acoc["em"] - initial.metrics["em"]
        out["em_gap_to_final"] = final.metrics["em"] - acoc["em"]
        out["parameter_steps_ratio_vs_final"] = acoc["parameter_steps"] / final.metrics["parameter_steps"]
        out["beats_initial"] = acoc["em"] > initial.metrics["em"]
        out["within_1_point_of_final"] = out["em_gap_to_final"] <= 1.0
        out["fewer_parameter_steps"] = acoc["parameter_steps"] < final.metrics["parameter_steps"]
        if "forgetting" in acoc:
            out["forgetting"] = acoc["forgetting"]
            out["forgetting_ok"] = acoc["forgetting"] <= 5.0
            out["forgets_less_than_static"] = all(
                acoc["forgetting"] < b.metrics["forgetting"] for b in (initial, final)
            )
    return out
