"""Continual tasks: a stage schedule, router protection (EWC + routing replay) and the forgetting metric.

The analysis (§3.2–3.3) rates the central router as the component most at risk when a new task arrives
and recommends, in order: a new block for the new task (the trainer splits an expert), light fine-tuning
of the router protected by EWC with Fisher information from the old tasks, and a small replay buffer of
old routing decisions. Both protections here act on the router rows only:

* `RouterEWC`: λ/2 · Σ F_i (θ_i − θ*_i)², F the empirical Fisher (mean squared gradient of the LM loss on
  old-task batches), normalised to mean 1 so that λ is in loss units per squared weight change.
* `RoutingReplay`: stored router inputs of old-task tokens with the routing distributions the router gave
  them; the loss is KL(stored ‖ current) on those inputs.

After a structural change the anchors and targets are refreshed from the (function-preserving) new model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F

from cascadelab.data.batches import LMBatch
from cascadelab.models.acoc.modeling_acoc import ACOCForCausalLM


def active_tasks(schedule: Mapping[str, int], cycle: int) -> list[str]:
    """Tasks introduced at or before `cycle`, in schedule order."""
    return [task for task, start in schedule.items() if start <= cycle]


def new_tasks(schedule: Mapping[str, int], cycle: int) -> list[str]:
    """Tasks introduced exactly at `cycle` (> 0: the first cycle's tasks are not "new")."""
    return [task for task, start in schedule.items() if start == cycle and cycle > 0]


def stage_tasks(schedule: Mapping[str, int], cycle: int) -> tuple[list[str], list[str]]:
    """(current stage's tasks, older tasks) at `cycle`: the latest introduction cycle defines the stage."""
    active = active_tasks(schedule, cycle)
    if not active:
        raise ValueError(f"tasks: no task is active at cycle {cycle} (every schedule needs a task at cycle 0)")
    latest = max(schedule[t] for t in active)
    return [t for t in active if schedule[t] == latest], [t for t in active if schedule[t] < latest]


def router_parameters(model: ACOCForCausalLM) -> dict[str, torch.nn.Parameter]:
    """The router rows (weights and biases of every expert), by parameter name."""
    return {name: param for name, param in model.named_parameters() if ".router_" in name}


def _forward(model: ACOCForCausalLM, batch: LMBatch) -> torch.Tensor:
    batch = batch.to(model.device)
    out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, labels=batch.labels, use_cache=False)
    assert out.loss is not None
    return out.loss


class RouterEWC:
    """Elastic weight consolidation of the router rows, Fisher from old-task batches."""

    def __init__(self, lam: float) -> None:
        self.lam = lam
        self.fisher: dict[str, torch.Tensor] = {}
        self.anchor: dict[str, torch.Tensor] = {}
        self._terms: list[tuple[torch.nn.Parameter, torch.Tensor, torch.Tensor]] = []

    def fit(self, model: ACOCForCausalLM, batches: Sequence[LMBatch]) -> None:
        """(Re)estimate the Fisher diagonal and anchor the router at its current values."""
        if not batches:
            raise ValueError("RouterEWC.fit: needs at least one old-task batch")
        params = router_parameters(model)
        was_training = model.training
        model.eval()
        fisher = {name: torch.zeros_like(p) for name, p in params.items()}
        for batch in batches:
            model.zero_grad(set_to_none=True)
            _forward(model, batch).backward()
            for name, param in params.items():
                if param.grad is not None:
                    fisher[name] += param.grad.detach().pow(2) / len(batches)
        model.zero_grad(set_to_none=True)
        model.train(was_training)
        mean = torch.cat([f.reshape(-1) for f in fisher.values()]).mean().clamp_min(1e-30)
        self.fisher = {name: f / mean for name, f in fisher.items()}
        self.anchor = {name: p.detach().clone() for name, p in params.items()}
        self._terms = [(params[name], self.fisher[name], self.anchor[name]) for name in params]

    def penalty(self, model: ACOCForCausalLM) -> torch.Tensor:
        """λ/2 · Σ F (θ − θ*)² over the router rows anchored by the last `fit` (refit after structural edits)."""
        total = torch.zeros((), device=model.device)
        for param, fisher, anchor in self._terms:
            total = total + (fisher * (param - anchor).pow(2)).sum()
        return 0.5 * self.lam * total


class RoutingReplay:
    """A small buffer of old-task router inputs and the routing distributions they received."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.inputs: list[torch.Tensor] = []
        self.targets: list[torch.Tensor] = []

    def __len__(self) -> int:
        return self.inputs[0].shape[0] if self.inputs else 0

    @torch.no_grad()
    def collect(self, model: ACOCForCausalLM, batches: Sequence[LMBatch], generator: torch.Generator | None) -> None:
        """Keep up to `capacity` random old-task tokens per layer (router inputs + current routing)."""
        if not batches or self.capacity == 0:
            return
        was_training = model.training
        model.eval()
        moes = model.moe_layers
        for moe in moes:
            moe.capture, moe.captured = True, []
        try:
            for batch in batches:
                batch = batch.to(model.device)
                model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False)
            inputs = []
            for moe in moes:
                rows = [r["inputs"] if r["valid"] is None else r["inputs"][r["valid"]] for r in moe.captured]
                inputs.append(torch.cat(rows))
        finally:
            for moe in moes:
                moe.capture, moe.captured = False, []
            model.train(was_training)
        count = min(self.capacity, inputs[0].shape[0])
        device = generator.device if generator is not None else inputs[0].device
        pick = torch.randperm(inputs[0].shape[0], generator=generator, device=device)[:count].to(inputs[0].device)
        self.inputs = [x[pick] for x in inputs]
        self.refresh(model)

    @torch.no_grad()
    def refresh(self, model: ACOCForCausalLM) -> None:
        """Recompute the stored distributions with the current router (after a structural change)."""
        self.targets = [
            moe.router_logits(x).float().softmax(-1) for moe, x in zip(model.moe_layers, self.inputs, strict=True)
        ]

    def loss(self, model: ACOCForCausalLM) -> torch.Tensor:
        """Mean over layers of KL(stored routing ‖ current routing) on the stored inputs."""
        if not self.inputs:
            return torch.zeros((), device=model.device)
        total = torch.zeros((), device=model.device)
        for moe, x, target in zip(model.moe_layers, self.inputs, self.targets, strict=True):
            log_probs = moe.router_logits(x).float().log_softmax(-1)
            total = total + F.kl_div(log_probs, target, reduction="batchmean")
        return total / len(self.inputs)


def forgetting(before: Mapping[str, float], after: Mapping[str, float]) -> float:
    """Mean accuracy drop (points, ≥ 0 per task) of the tasks in `before` between `before` and `after`."""
    if not before:
        raise ValueError("forgetting: no old task to measure")
    missing = [task for task in before if task not in after]
    if missing:
        raise ValueError(f"forgetting: no final accuracy for task {missing[0]!r}")
    return sum(max(0.0, before[t] - after[t]) for t in before) / len(before)
