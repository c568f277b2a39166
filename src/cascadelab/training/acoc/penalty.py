"""The ACOC double growth penalty, differentiable through the soft expert gates.

    penalty = α · log(1 + P_global / P_baseline) + β · Σ_t max(0, P_t − threshold_t)²

(analysis §1.2: logarithmic for the whole model so small models are barely punished, quadratic per task
so that no task monopolises capacity). `P_global` counts every expert at `gate × size`; a task's `P_t` is
its routing-weighted share of every gated expert plus an even share of the shared parameters
(`accounting.task_parameter_counts`), so the penalty pushes the gates of unneeded experts toward zero
and, through the routing, keeps each task within its threshold. `GrowthPenalty` measures every count in
units of `P_baseline` (the initial model's size), so α and β are in loss units whatever the model size.

Thresholds adapt: a task starts at `threshold_ratio` × its fair share of the model at the time it appears,
and its threshold relaxes by `relax_factor` whenever its loss stagnates (the analysis' answer to the
"growth plateau" risk). Other tasks' routing usage comes from an exponential moving average (batches
hold one task), the current task's from the batch itself, with gradient.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch

from cascadelab.config import PenaltyParams
from cascadelab.models.acoc.accounting import (
    ParameterCounts,
    count_parameters,
    routing_usage,
    soft_parameter_count,
    task_parameter_counts,
)
from cascadelab.models.acoc.modeling_acoc import ACOCForCausalLM


def double_penalty(
    p_global: torch.Tensor,
    p_baseline: float,
    p_tasks: Mapping[str, torch.Tensor],
    thresholds: Mapping[str, float],
    alpha: float,
    beta: float,
) -> torch.Tensor:
    """α·log(1 + P_global/P_baseline) + β·Σ_t max(0, P_t − threshold_t)²."""
    if p_baseline <= 0:
        raise ValueError(f"p_baseline: must be > 0 (got {p_baseline})")
    missing = [task for task in p_tasks if task not in thresholds]
    if missing:
        raise ValueError(f"thresholds: no threshold for task {missing[0]!r}")
    penalty = alpha * torch.log1p(p_global / p_baseline)
    for task, p_task in p_tasks.items():
        penalty = penalty + beta * torch.clamp(p_task - thresholds[task], min=0).pow(2)
    return penalty


class GrowthPenalty:
    """The double penalty of a training run: per-task usage averages and adaptive thresholds."""

    def __init__(self, params: PenaltyParams, p_baseline: float) -> None:
        if p_baseline <= 0:
            raise ValueError(f"p_baseline: must be > 0 (got {p_baseline})")
        self.params = params
        self.p_baseline = float(p_baseline)
        self.thresholds: dict[str, float] = {}
        self.usage: dict[str, list[torch.Tensor]] = {}
        self._counts: ParameterCounts | None = None
        self._structure: list[list[list[int]]] = []

    def add_tasks(self, model: ACOCForCausalLM, tasks: list[str]) -> None:
        """Give new tasks a threshold: `threshold_ratio` × the current model size / number of tasks."""
        total = count_parameters(model).total
        count = len(self.thresholds) + len([t for t in tasks if t not in self.thresholds])
        for task in tasks:
            self.thresholds.setdefault(task, self.params.threshold_ratio * total / max(count, 1))

    def relax(self, task: str) -> float:
        """Relax a stagnating task's threshold; returns the new threshold."""
        self.thresholds[task] *= self.params.relax_factor
        return self.thresholds[task]

    def reset_usage(self) -> None:
        """Forget the usage averages and cached counts (call after the expert structure changed)."""
        self.usage.clear()
        self._counts = None

    def __call__(self, model: ACOCForCausalLM, task: str) -> tuple[torch.Tensor, dict[str, Any]]:
        """Penalty for the last forward pass, made on a batch of `task` (call right after the forward)."""
        if task not in self.thresholds:
            raise ValueError(f"task {task!r}: no threshold (call add_tasks first)")
        current = routing_usage(model)
        shapes = [u.shape for u in current]
        usage = {t: u for t, u in self.usage.items() if t != task and [x.shape for x in u] == shapes}
        usage[task] = current
        if self._counts is None or self._structure != model.config.expert_widths:
            self._counts = count_parameters(model)
            self._structure = copy.deepcopy(model.config.expert_widths)
        scale = self.p_baseline
        p_global = soft_parameter_count(model, self._counts) / scale
        p_tasks = {t: p / scale for t, p in task_parameter_counts(model, usage, True, self._counts).items()}
        thresholds = {t: self.thresholds[t] / scale for t in p_tasks}
        penalty = double_penalty(p_global, 1.0, p_tasks, thresholds, self.params.alpha, self.params.beta)
        decay = self.params.usage_ema
        previous = self.usage.get(task)
        detached = [u.detach() for u in current]
        if previous is None or [p.shape for p in previous] != [d.shape for d in detached]:
            self.usage[task] = detached
        else:
            self.usage[task] = [decay * p + (1 - decay) * d for p, d in zip(previous, detached, strict=True)]
        info = {
            "p_global": float(p_global.detach()) * scale,
            **{f"p_{t}": float(p.detach()) * scale for t, p in p_tasks.items()},
        }
        return penalty, info
