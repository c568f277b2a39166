"""Structural edits of an ACOC model between training cycles: split, widen, prune, merge.

* `split_expert` (Net2Net-style copy): the new expert copies the source's blocks, gate and router row;
  both router biases are lowered by log 2, so the pair takes exactly the source's softmax probability and,
  under dense mixing, the model's function is unchanged. A zero-sum perturbation of the two down
  projections (+ε on one, −ε on the other) breaks their symmetry without changing the mixed output.
  Under top-k routing the pair may now take two slots, so the output can move (measure it).
* `widen_expert` (Net2WiderNet): duplicate randomly chosen hidden units into a new block and divide every
  copy's outgoing weights by its replication count (again with a zero-sum perturbation): exact for any
  elementwise activation, in every routing mode.
* `prune_expert` removes an expert; `merge_experts` replaces two experts of equal width by their weighted
  average (router rows merged so that their probabilities add: biases combined with logaddexp).

Every edit rewrites `model.config.expert_widths`, so `save_pretrained`/`from_pretrained` round-trip the new
shapes, and returns a `StructureChange` naming the new parameter tensors (the optimizer gives them their
own learning rate during warmup).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from cascadelab.models.acoc.accounting import count_parameters
from cascadelab.models.acoc.modeling_acoc import ACOCExpert, ACOCExpertBlock, ACOCForCausalLM, ACOCMoE

ChangeKind = Literal["split", "widen", "prune", "merge"]


@dataclass
class StructureChange:
    """One structural edit: where, what it created, and the parameter counts around it."""

    kind: ChangeKind
    layer: int
    experts: list[int]
    params_before: int
    params_after: int
    new_expert: int | None = None
    new_params: list[nn.Parameter] = field(default_factory=list, repr=False)
    details: dict[str, Any] = field(default_factory=dict)

    def to_event(self) -> dict[str, Any]:
        """A JSON-friendly description (no tensors)."""
        return {
            "kind": self.kind,
            "layer": self.layer,
            "experts": list(self.experts),
            "new_expert": self.new_expert,
            "params_before": self.params_before,
            "params_after": self.params_after,
            "new_param_count": sum(p.numel() for p in self.new_params),
            **self.details,
        }


def sync_config(model: ACOCForCausalLM) -> None:
    """Write the current expert structure back into `model.config` (what from_pretrained rebuilds)."""
    widths = [[expert.widths for expert in moe.expert_list()] for moe in model.moe_layers]
    model.config.expert_widths = widths
    model.config.num_experts = len(widths[0])
    model.config.expert_width = widths[0][0][0]


def _moe(model: ACOCForCausalLM, layer: int, *experts: int) -> ACOCMoE:
    if not 0 <= layer < len(model.moe_layers):
        raise ValueError(f"layer: {layer} out of range (model has {len(model.moe_layers)} layers)")
    moe = model.moe_layers[layer]
    for index in experts:
        if not 0 <= index < moe.num_experts:
            raise ValueError(f"expert: {index} out of range (layer {layer} has {moe.num_experts} experts)")
    return moe


def _rms(tensor: torch.Tensor) -> float:
    return float(tensor.pow(2).mean().sqrt())


def _noise(shape: torch.Size, scale: float, like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    device = generator.device if generator is not None else like.device
    return (torch.randn(shape, generator=generator, device=device) * scale).to(like.device, like.dtype)


@torch.no_grad()
def split_expert(
    model: ACOCForCausalLM, layer: int, expert: int, generator: torch.Generator | None = None, noise: float = 0.1
) -> StructureChange:
    """Add a copy of `expert` (appended last); exact under dense mixing. `noise` scales the zero-sum ε (× rms)."""
    moe = _moe(model, layer, expert)
    before = count_parameters(model).total
    source = moe.expert(expert)
    clone = copy.deepcopy(source)
    for block_src, block_new in zip(source.block_list(), clone.block_list(), strict=True):
        weight = block_src.down.weight
        eps = _noise(weight.shape, noise * _rms(weight), weight, generator)
        block_src.down.weight.sub_(eps)
        block_new.down.weight.add_(eps)
    source.router_bias.sub_(math.log(2.0))
    clone.router_bias.copy_(source.router_bias)
    moe.experts.append(clone)
    sync_config(model)
    return StructureChange(
        "split",
        layer,
        [expert],
        before,
        count_parameters(model).total,
        new_expert=moe.num_experts - 1,
        new_params=list(clone.parameters()),
        details={"width": sum(source.widths)},
    )


@torch.no_grad()
def widen_expert(
    model: ACOCForCausalLM,
    layer: int,
    expert: int,
    extra: int,
    generator: torch.Generator | None = None,
    noise: float = 0.1,
) -> StructureChange:
    """Net2WiderNet: append a block of `extra` duplicated units to `expert`; the function is unchanged."""
    if extra < 1:
        raise ValueError(f"extra: must be >= 1 (got {extra})")
    moe = _moe(model, layer, expert)
    before = count_parameters(model).total
    target = moe.expert(expert)
    up_w, up_b, down_w = (t.detach().clone() for t in target.weights())
    width = up_w.shape[0]
    device = generator.device if generator is not None else up_w.device
    index = torch.randint(width, (extra,), generator=generator, device=device).to(up_w.device)
    counts = torch.ones(width, device=up_w.device).index_add(0, index, torch.ones(extra, device=up_w.device))
    scaled = down_w / counts  # every copy of unit j (the original included) carries 1/c_j of its output
    new_down = scaled[:, index].clone()
    eps = _noise(new_down.shape, noise * _rms(new_down), new_down, generator)
    new_down += eps
    scaled.index_add_(1, index, -eps)
    offset = 0
    for old in target.block_list():
        old.down.weight.copy_(scaled[:, offset : offset + old.width])
        offset += old.width
    block = ACOCExpertBlock(up_w.shape[1], extra).to(device=up_w.device, dtype=up_w.dtype)
    block.up.weight.copy_(up_w[index])
    block.up.bias.copy_(up_b[index])
    block.down.weight.copy_(new_down)
    target.blocks.append(block)
    sync_config(model)
    return StructureChange(
        "widen",
        layer,
        [expert],
        before,
        count_parameters(model).total,
        new_params=list(block.parameters()),
        details={"width_before": width, "width_after": width + extra},
    )


def prune_expert(model: ACOCForCausalLM, layer: int, expert: int) -> StructureChange:
    """Remove `expert` from `layer` (never the last one)."""
    moe = _moe(model, layer, expert)
    if moe.num_experts == 1:
        raise ValueError(f"expert: cannot prune the only expert of layer {layer}")
    before = count_parameters(model).total
    del moe.experts[expert]
    sync_config(model)
    return StructureChange("prune", layer, [expert], before, count_parameters(model).total)


def _flat(expert: ACOCExpert) -> torch.Tensor:
    up_w, up_b, down_w = expert.weights()
    return torch.cat([up_w.reshape(-1), up_b.reshape(-1), down_w.t().reshape(-1)]).detach()


def expert_similarity(a: ACOCExpert, b: ACOCExpert) -> float | None:
    """Cosine similarity of two experts' weights (unit by unit), or None when their widths differ."""
    if sum(a.widths) != sum(b.widths):
        return None
    return float(torch.nn.functional.cosine_similarity(_flat(a), _flat(b), dim=0))


@torch.no_grad()
def merge_experts(model: ACOCForCausalLM, layer: int, a: int, b: int, weight_a: float = 0.5) -> StructureChange:
    """Replace experts `a` and `b` (equal widths) by their `weight_a`-weighted average, at index min(a, b)."""
    if a == b:
        raise ValueError(f"merge: needs two different experts (got {a} twice)")
    if not 0.0 <= weight_a <= 1.0:
        raise ValueError(f"weight_a: must be in [0, 1] (got {weight_a})")
    moe = _moe(model, layer, a, b)
    ea, eb = moe.expert(a), moe.expert(b)
    similarity = expert_similarity(ea, eb)
    if similarity is None:
        raise ValueError(f"merge: experts {a} and {b} of layer {layer} have different widths")
    before = count_parameters(model).total
    wa, wb = weight_a, 1.0 - weight_a
    (ua, ba, da), (ub, bb, db) = ea.weights(), eb.weights()
    merged = ACOCExpert(moe.hidden_size, [ua.shape[0]], moe.hidden_act, moe.gate_init).to(ua.device, ua.dtype)
    block = merged.block_list()[0]
    block.up.weight.copy_(wa * ua + wb * ub)
    block.up.bias.copy_(wa * ba + wb * bb)
    block.down.weight.copy_(wa * da + wb * db)
    gate = wa * ea.gate + wb * eb.gate
    merged.gate_logit.copy_(torch.logit(gate.clamp(1e-6, 1 - 1e-6)))
    merged.router_weight.copy_(wa * ea.router_weight + wb * eb.router_weight)
    merged.router_bias.copy_(torch.logaddexp(ea.router_bias, eb.router_bias))
    keep, drop = min(a, b), max(a, b)
    moe.experts[keep] = merged
    del moe.experts[drop]
    sync_config(model)
    return StructureChange(
        "merge",
        layer,
        [a, b],
        before,
        count_parameters(model).total,
        new_expert=keep,
        new_params=list(merged.parameters()),
        details={"similarity": similarity, "weight_a": weight_a},
    )


def similar_pairs(
    model: ACOCForCausalLM, threshold: float = 0.9, exclude: set[tuple[int, int]] | None = None
) -> list[tuple[int, int, int, float]]:
    """`(layer, a, b, similarity)` for expert pairs at or above `threshold`, most similar first."""
    exclude = exclude or set()
    pairs = []
    for layer, moe in enumerate(model.moe_layers):
        experts = moe.expert_list()
        for a in range(len(experts)):
            for b in range(a + 1, len(experts)):
                if (layer, a) in exclude or (layer, b) in exclude:
                    continue
                similarity = expert_similarity(experts[a], experts[b])
                if similarity is not None and similarity >= threshold:
                    pairs.append((layer, a, b, similarity))
    return sorted(pairs, key=lambda pair: -pair[3])
