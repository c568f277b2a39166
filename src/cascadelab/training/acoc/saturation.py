"""Per-expert saturation metrics and the combined saturation score that feeds the growth decision.

Measured over a few batches with the MoE layers in capture mode and one backward pass (no optimizer step):

* `grad_norm`: gradient-flow norm, ‖∇W‖ / ‖W‖ over the expert's block weights (small = saturated or converged);
* `activation_saturation`: share of (token, unit) pairs in a flat region of the activation (|act'| < eps);
* `dead_ratio`: share of units that never activate above `dead_eps` on any routed token;
* `activation_variance`: Var(act) / E[act²] per unit over the tokens of all batches, averaged over units
  (how much the unit responds to its input; low = stuck);
* `load`: the expert's share of the layer's routing mass.

Token statistics are weighted by the routing weight of the expert, so dense and top-k mixing compare.
The v0.2 analysis found a single heuristic never fired (problem 2): the score is a weighted mean of five
components in [0, 1]: `1/(1 + grad_norm/grad_ref)`, saturation, dead ratio, `1 - variance`, load.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch

from cascadelab.config import SaturationParams
from cascadelab.data.batches import LMBatch
from cascadelab.models.acoc.modeling_acoc import ACOCExpert, ACOCForCausalLM


@dataclass(frozen=True)
class ExpertSaturation:
    """Saturation metrics of one expert and their combined score in [0, 1]."""

    layer: int
    expert: int
    grad_norm: float
    activation_saturation: float
    dead_ratio: float
    activation_variance: float
    load: float
    score: float

    def to_dict(self) -> dict[str, float]:
        """A JSON-friendly copy."""
        return {key: float(value) for key, value in asdict(self).items()}


def combined_score(
    grad_norm: float, saturation: float, dead: float, variance: float, load: float, params: SaturationParams
) -> float:
    """Weighted mean of the five components mapped to [0, 1] (1 = saturated)."""
    parts = [
        (params.weight_grad, 1.0 / (1.0 + grad_norm / params.grad_ref)),
        (params.weight_saturation, saturation),
        (params.weight_dead, dead),
        (params.weight_variance, 1.0 - min(1.0, max(0.0, variance))),
        (params.weight_load, load),
    ]
    total = sum(weight for weight, _ in parts)
    if total <= 0:
        raise ValueError("saturation weights: at least one must be > 0")
    return sum(weight * value for weight, value in parts) / total


def _slope(expert: ACOCExpert, pre: torch.Tensor, h: float = 1e-3) -> torch.Tensor:
    return (expert.act(pre + h) - expert.act(pre - h)) / (2 * h)


def _expert_stats(
    expert: ACOCExpert, records: list[tuple[torch.Tensor, torch.Tensor]], params: SaturationParams
) -> tuple[float, float, float]:
    """Routing-weighted (saturation, dead ratio, variance) from (token weights (n,), pre-activations (n, W))."""
    weights = torch.cat([w for w, _ in records])
    pre = torch.cat([p for _, p in records])
    keep = weights > 0
    if not bool(keep.any()):
        return 0.0, 1.0, 0.0
    weights, pre = weights[keep], pre[keep]
    w = (weights / weights.sum())[:, None]
    act = expert.act(pre)
    flat = (_slope(expert, pre).abs() < params.flat_eps).float()
    saturation = min(1.0, float((w * flat).sum(0).mean()))
    dead = float((act.max(0).values <= params.dead_eps).float().mean())
    mean = (w * act).sum(0)
    second = (w * act.pow(2)).sum(0)
    variance = float(((second - mean.pow(2)).clamp_min(0) / second.clamp_min(1e-12)).mean())
    return saturation, dead, variance


def measure_saturation(
    model: ACOCForCausalLM, batches: Sequence[LMBatch], params: SaturationParams
) -> list[list[ExpertSaturation]]:
    """Saturation metrics `[layer][expert]` over `batches` (gradients are cleared afterwards)."""
    if not batches:
        raise ValueError("measure_saturation: needs at least one batch")
    was_training = model.training
    model.eval()
    moes = model.moe_layers
    for moe in moes:
        moe.capture, moe.captured = True, []
    model.zero_grad(set_to_none=True)
    device = model.device
    try:
        for batch in batches:
            batch = batch.to(device)
            out = model(
                input_ids=batch.input_ids, attention_mask=batch.attention_mask, labels=batch.labels, use_cache=False
            )
            (out.loss / len(batches)).backward()
        result = []
        for layer, moe in enumerate(moes):
            per_expert: list[list[tuple[torch.Tensor, torch.Tensor]]] = [[] for _ in range(moe.num_experts)]
            loads = torch.zeros(moe.num_experts, device=device)
            tokens = 0
            for record in moe.captured:
                valid = record["valid"]
                weights = record["weights"]
                valid = torch.ones(weights.shape[0], dtype=torch.bool, device=device) if valid is None else valid
                loads += weights[valid].sum(0)
                tokens += int(valid.sum())
                for e, (rows, pre) in enumerate(record["pre"]):
                    token_weights = weights[:, e] if rows is None else weights[rows, e]
                    token_valid = valid if rows is None else valid[rows]
                    per_expert[e].append((token_weights * token_valid, pre))
            loads = loads / max(tokens, 1)
            layer_stats = []
            for e, expert in enumerate(moe.expert_list()):
                grads = [p.grad for block in expert.blocks for p in block.parameters() if p.grad is not None]
                weights_ = [p for block in expert.blocks for p in block.parameters()]
                grad = torch.sqrt(sum((g.pow(2).sum() for g in grads), torch.tensor(0.0, device=device)))
                norm = torch.sqrt(sum((p.detach().pow(2).sum() for p in weights_), torch.tensor(0.0, device=device)))
                grad_norm = float(grad / norm.clamp_min(1e-12))
                saturation, dead, variance = _expert_stats(expert, per_expert[e], params)
                load = float(loads[e])
                score = combined_score(grad_norm, saturation, dead, variance, load, params)
                layer_stats.append(ExpertSaturation(layer, e, grad_norm, saturation, dead, variance, load, score))
            result.append(layer_stats)
        return result
    finally:
        for moe in moes:
            moe.capture, moe.captured = False, []
        model.zero_grad(set_to_none=True)
        model.train(was_training)
