"""DeepSeek-style mixture of experts: shared + routed SwiGLU experts, top-k sigmoid routing.

Load balancing follows DeepSeek-V3 (arXiv:2412.19437, §2.1.2): a per-expert bias ``b_i`` is added to
the affinities *only to choose* the top-k experts; the gates use the raw affinities. After each
training step, ``b_i ← b_i + u · sign(mean load − load_i)`` pushes tokens toward under-loaded
experts without an auxiliary loss. An optional small complementary balance loss
``α Σ_i f_i P_i`` (computed here over the whole batch rather than per sequence) can be added.

Two dispatches compute the same function. *Sparse* gathers each expert's tokens and runs the expert
on them (the usual MoE kernel plan). *Dense* runs all routed experts as two concatenated matmuls and
zeroes the non-selected ones through their gates: E/k times the routed FLOPs but four matmuls in
all, which is faster for a handful of tiny experts on a CPU. ``moe_dispatch="auto"`` picks dense for
at most 8 plain-Linear experts, sparse otherwise (BitLinear experts quantise per expert: sparse).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cascadelab.models.sigma.bitlinear import make_linear
from cascadelab.models.sigma.configuration_sigma import SigmaConfig
from cascadelab.models.sigma.features import FeatureCalls


class SigmaMLP(nn.Module):
    """SwiGLU feed-forward: down(silu(gate(x)) * up(x)), gate and up fused in one projection."""

    def __init__(
        self, config: SigmaConfig, intermediate_size: int, family: str, features: FeatureCalls | None = None
    ) -> None:
        super().__init__()
        families, triton = config.bitlinear_families, config.use_triton
        self.gate_up_proj = make_linear(
            family, config.hidden_size, 2 * intermediate_size, families, features, use_triton=triton
        )
        self.down_proj = make_linear(
            family, intermediate_size, config.hidden_size, families, features, use_triton=triton
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the SwiGLU feed-forward."""
        gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
        return self.down_proj(F.silu(gate) * up)


@dataclass
class RoutingStats:
    """Routing of the last forward: per-expert token fractions and the balancing biases."""

    load: torch.Tensor
    bias: torch.Tensor

    def summary(self, prefix: str = "") -> dict[str, float]:
        """Flat metrics: max/min load ratio to the uniform share and the per-expert loads."""
        n = self.load.numel()
        out = {
            f"{prefix}load_max_over_mean": float(self.load.max() * n),
            f"{prefix}load_min_over_mean": float(self.load.min() * n),
        }
        out.update({f"{prefix}load_{i}": float(v) for i, v in enumerate(self.load)})
        return out


class SigmaTopKRouter(nn.Module):
    """Sigmoid affinities, bias-adjusted top-k choice, normalised gates (DeepSeek-V3)."""

    e_score_correction_bias: torch.Tensor

    def __init__(self, config: SigmaConfig) -> None:
        super().__init__()
        self.top_k = config.moe_top_k
        self.num_experts = config.moe_num_routed_experts
        self.routed_scaling = config.moe_routed_scaling
        self.weight = nn.Parameter(torch.empty(self.num_experts, config.hidden_size))
        # persistent: the balancing state travels with the checkpoint
        self.register_buffer("e_score_correction_bias", torch.zeros(self.num_experts))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (M, D) -> expert indices (M, k), gates (M, k), affinities (M, E)."""
        scores = torch.sigmoid(F.linear(x.float(), self.weight.float()))
        choice = scores.detach() + self.e_score_correction_bias
        idx = choice.topk(self.top_k, dim=-1).indices
        gates = scores.gather(-1, idx)
        if self.top_k > 1:
            gates = gates / (gates.sum(-1, keepdim=True) + 1e-20)
        return idx, gates * self.routed_scaling, scores


class SigmaMoE(nn.Module):
    """Shared experts on every token plus top-k of the routed experts, with aux-loss-free balancing."""

    last_load: torch.Tensor

    def __init__(self, config: SigmaConfig, features: FeatureCalls | None = None) -> None:
        super().__init__()
        self.features = features
        self.num_experts = config.moe_num_routed_experts
        self.top_k = config.moe_top_k
        self.bias_update_rate = config.moe_bias_update_rate
        self.aux_loss_coef = config.moe_aux_loss_coef
        self.router = SigmaTopKRouter(config)
        self.experts = nn.ModuleList(
            SigmaMLP(config, config.moe_intermediate_size, "moe_routed", features) for _ in range(self.num_experts)
        )
        shared = config.moe_num_shared_experts * config.moe_shared_intermediate_size
        self.shared_experts = SigmaMLP(config, shared, "moe_shared", features) if shared else None
        self.register_buffer("last_load", torch.zeros(self.num_experts), persistent=False)
        self._pending_load: torch.Tensor | None = None
        bit_experts = "moe_routed" in config.bitlinear_families
        if config.moe_dispatch == "dense" and bit_experts:
            raise ValueError("moe_dispatch='dense' cannot be used with BitLinear routed experts (moe_routed)")
        self.dense_dispatch = config.moe_dispatch == "dense" or (
            config.moe_dispatch == "auto" and self.num_experts <= 8 and not bit_experts
        )

    def _recomputing(self) -> bool:
        return self.features is not None and self.features.recomputing

    @torch.no_grad()
    def _apply_pending_bias_update(self) -> None:
        # applied at the start of the next training forward, never between a forward and its
        # checkpoint recomputation, so both see the same routing
        if self._pending_load is None or self.bias_update_rate == 0 or self._recomputing():
            return
        load = self._pending_load
        self.router.e_score_correction_bias += self.bias_update_rate * torch.sign(load.mean() - load)
        self._pending_load = None

    def forward(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """hidden (..., D) -> (output (..., D), auxiliary balance loss, unweighted scalar)."""
        if self.features is not None:
            self.features.hit("moe")
        if self.training:
            self._apply_pending_bias_update()
        shape = hidden.shape
        x = hidden.reshape(-1, shape[-1])
        idx, gates, scores = self.router(x)
        counts = torch.bincount(idx.flatten(), minlength=self.num_experts)
        load = counts.float() / idx.numel()
        self.last_load.copy_(load)
        if self.training and not self._recomputing():
            self._pending_load = load.detach()
        out = self._dense_experts(x, idx, gates) if self.dense_dispatch else self._sparse_experts(x, idx, gates, counts)
        if self.shared_experts is not None:
            out = out + self.shared_experts(x)
        aux = x.new_zeros((), dtype=torch.float32)
        if self.training and self.aux_loss_coef > 0:
            frac = load * self.num_experts  # f_i, 1 at perfect balance
            prob = (scores / scores.sum(-1, keepdim=True)).mean(0)  # P_i
            aux = (frac.detach() * prob).sum()
        return out.reshape(shape), aux

    def _sparse_experts(
        self, x: torch.Tensor, idx: torch.Tensor, gates: torch.Tensor, counts: torch.Tensor
    ) -> torch.Tensor:
        # group (token, slot) pairs by expert and run each expert once on its tokens
        order = idx.flatten().argsort(stable=True)
        tokens = order // self.top_k
        weights = gates.flatten()[order].to(x.dtype)
        out = torch.zeros_like(x)
        start = 0
        for expert, n in zip(self.experts, counts.tolist(), strict=True):
            if n:
                tok = tokens[start : start + n]
                out.index_add_(0, tok, expert(x[tok]) * weights[start : start + n, None])
            start += n
        return out

    def _dense_experts(self, x: torch.Tensor, idx: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
        # every routed expert on every token; a zero gate removes it (and its gradient) exactly
        experts: list[Any] = list(self.experts)
        up_weight = torch.cat([e.gate_up_proj.weight for e in experts])  # (E * 2I, D)
        down_weight = torch.cat([e.down_proj.weight for e in experts], dim=1)  # (D, E * I)
        gate, up = F.linear(x, up_weight).unflatten(-1, (self.num_experts, 2, -1)).unbind(2)
        dense_gates = torch.zeros(x.shape[0], self.num_experts, dtype=x.dtype, device=x.device)
        dense_gates = dense_gates.scatter(1, idx, gates.to(x.dtype))
        hidden = F.silu(gate) * up * dense_gates.unsqueeze(-1)  # (M, E, I)
        return F.linear(hidden.flatten(1), down_weight)

    def routing_stats(self) -> RoutingStats:
        """Per-expert token fractions of the last forward and the current balancing biases."""
        return RoutingStats(self.last_load.detach().clone(), self.router.e_score_correction_bias.detach().clone())
