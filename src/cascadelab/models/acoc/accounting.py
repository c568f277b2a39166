"""Exact parameter accounting of an ACOC model: global, per expert, per task.

* `count_parameters`: exact integer counts. An expert's size counts its blocks, its gate and its router
  row, so `shared + Σ experts == total` always (checked), whatever growth, pruning or merging did.
* `soft_parameter_count`: the gate-weighted global count `shared + Σ_e gate_e · size_e`, differentiable in
  the gates (what the growth penalty sees).
* `task_parameter_counts`: a task's share of every expert is its share of the expert's routing mass,
  `s_{t,e} = u_{t,e} / Σ_t' u_{t',e}` (`u` = mean routing weight of the task's tokens); shared parameters
  are split evenly. The per-task counts therefore add up exactly to the global count.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from cascadelab.models.acoc.modeling_acoc import ACOCExpert, ACOCForCausalLM

Usage = Sequence[torch.Tensor]  # per layer, (E,) mean routing weight of a task's tokens on each expert


def expert_size(expert: ACOCExpert) -> int:
    """Parameters owned by one expert: its blocks, its gate and its router row."""
    return sum(p.numel() for p in expert.parameters())


def unique_parameters(module: nn.Module) -> list[nn.Parameter]:
    """Parameters of `module`, tied tensors once."""
    seen: set[int] = set()
    params = []
    for param in module.parameters():
        if id(param) not in seen:
            seen.add(id(param))
            params.append(param)
    return params


@dataclass(frozen=True)
class ParameterCounts:
    """Exact counts: total, shared (embeddings, attention, norms) and per expert `[layer][expert]`."""

    total: int
    shared: int
    experts: list[list[int]]

    @property
    def expert_total(self) -> int:
        """All expert parameters."""
        return sum(sum(layer) for layer in self.experts)

    @property
    def num_experts(self) -> list[int]:
        """Experts per layer."""
        return [len(layer) for layer in self.experts]


def count_parameters(model: ACOCForCausalLM) -> ParameterCounts:
    """Exact parameter counts; raises if the expert and shared counts do not add up to the total."""
    total = sum(p.numel() for p in unique_parameters(model))
    experts = [[expert_size(e) for e in moe.expert_list()] for moe in model.moe_layers]
    expert_ids = {id(p) for moe in model.moe_layers for p in moe.parameters()}
    shared = sum(p.numel() for p in unique_parameters(model) if id(p) not in expert_ids)
    counts = ParameterCounts(total=total, shared=shared, experts=experts)
    if counts.shared + counts.expert_total != total:
        raise RuntimeError(f"parameter accounting broke: {shared} + {counts.expert_total} != {total}")
    return counts


def soft_parameter_count(model: ACOCForCausalLM, counts: ParameterCounts | None = None) -> torch.Tensor:
    """Gate-weighted global count `shared + Σ_e gate_e · size_e` (a scalar tensor, differentiable in the gates).

    `counts` may pass a cached `count_parameters(model)` of the current structure.
    """
    counts = counts or count_parameters(model)
    total = torch.tensor(float(counts.shared), device=model.device)
    for moe, sizes in zip(model.moe_layers, counts.experts, strict=True):
        gates = moe.gates()
        total = total + (gates * torch.tensor(sizes, dtype=gates.dtype, device=gates.device)).sum()
    return total


def routing_usage(model: ACOCForCausalLM) -> list[torch.Tensor]:
    """Per layer, the mean routing weight (E,) over the valid tokens of the last forward pass (with gradient)."""
    usage = []
    for moe in model.moe_layers:
        if moe.last_weights is None:
            raise ValueError("routing_usage: run a forward pass first")
        weights = moe.last_weights
        if moe.last_valid is not None:
            weights = weights[moe.last_valid]
        usage.append(weights.mean(0) if weights.shape[0] else weights.new_zeros(weights.shape[-1]))
    return usage


def task_shares(usage_by_task: Mapping[str, Usage]) -> dict[str, list[torch.Tensor]]:
    """Each task's share of each expert, `u_{t,e} / Σ_t' u_{t',e}` (equal shares where nobody routes)."""
    tasks = list(usage_by_task)
    if not tasks:
        raise ValueError("usage_by_task: needs at least one task")
    shares: dict[str, list[torch.Tensor]] = {t: [] for t in tasks}
    layers = len(usage_by_task[tasks[0]])
    for layer in range(layers):
        stacked = torch.stack([usage_by_task[t][layer] for t in tasks])  # (T, E)
        total = stacked.sum(0, keepdim=True)
        equal = torch.full_like(stacked, 1.0 / len(tasks))
        share = torch.where(total > 0, stacked / total.clamp_min(1e-30), equal)
        for index, task in enumerate(tasks):
            shares[task].append(share[index])
    return shares


def task_parameter_counts(
    model: ACOCForCausalLM,
    usage_by_task: Mapping[str, Usage],
    gated: bool = True,
    counts: ParameterCounts | None = None,
) -> dict[str, torch.Tensor]:
    """Per-task parameter counts: shared/T plus the task's routing share of every (gate-weighted) expert.

    With `gated=False` the experts count in full and the counts add up exactly to `count_parameters().total`;
    with `gated=True` they add up to `soft_parameter_count` and carry gradient to the gates and the routing.
    """
    counts = counts or count_parameters(model)
    shares = task_shares(usage_by_task)
    per_task: dict[str, torch.Tensor] = {}
    for task, task_share in shares.items():
        value = torch.tensor(counts.shared / len(shares), device=model.device)
        for moe, sizes, share in zip(model.moe_layers, counts.experts, task_share, strict=True):
            size = torch.tensor(sizes, dtype=share.dtype, device=share.device)
            if gated:
                size = size * moe.gates().to(share.dtype)
            value = value + (share * size).sum()
        per_task[task] = value
    return per_task
