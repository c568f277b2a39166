"""The shared core of the Muon family: momentum, Newton–Schulz orthogonalisation, decoupled weight decay.

For a 2-D parameter W (rows x cols) with gradient G, every optimizer of the family computes

    M ← μ M + (1 − μ) G                         (momentum, an EMA like torch.optim.Muon's ``lerp``)
    N = (1 − μ) G + μ M   (Nesterov)   or   M
    O = NS₅(N)                                  (quintic Newton–Schulz ≈ U Vᵀ of N = U S Vᵀ, in float32)
    W ← W (1 − η λ) − η · a(rows, cols) · S(O)   with a = sqrt(max(1, rows / cols))

where ``S`` is the subclass's shaping of the orthogonal update (identity for Muon) and ``η`` may be
scaled per parameter group (C3O's credit). Subclasses override :meth:`OrthogonalMomentum.shape_update`.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from cascadelab.training.optimizers.muon import NS_COEFFICIENTS, newton_schulz_orthogonalize
from cascadelab.training.optimizers.stepping import closure_loss, params_with_grad


def muon_lr_ratio(shape: torch.Size) -> float:
    """Keller Jordan's shape factor sqrt(max(1, rows / cols)) (torch.optim.Muon's "original")."""
    rows, cols = shape[:2]
    return math.sqrt(max(1.0, rows / cols))


class OrthogonalMomentum(torch.optim.Optimizer):
    """Muon-style orthogonalised momentum for 2-D parameters; subclasses shape the orthogonal update."""

    def __init__(
        self,
        params: Any,
        lr: float = 0.02,
        momentum: float = 0.95,
        weight_decay: float = 0.0,
        nesterov: bool = True,
        ns_steps: int = 5,
        ns_dtype: torch.dtype = torch.float32,
        eps: float = 1e-7,
        **extra: Any,
    ) -> None:
        if lr <= 0 or not 0 <= momentum < 1 or weight_decay < 0 or ns_steps < 1:
            raise ValueError(f"invalid hyper-parameters lr={lr} momentum={momentum} wd={weight_decay} ns={ns_steps}")
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "weight_decay": weight_decay,
            "nesterov": nesterov,
            "ns_steps": ns_steps,
            "eps": eps,
            **extra,
        }
        super().__init__(params, defaults)
        for group in self.param_groups:
            for p in group["params"]:
                if p.ndim != 2:
                    raise ValueError(f"{type(self).__name__} only supports 2-D parameters, got shape {tuple(p.shape)}")
        self.ns_dtype = ns_dtype

    def orthogonal(self, p: torch.Tensor, group: dict[str, Any]) -> torch.Tensor:
        """Update the momentum of `p` and return the orthogonalised (Nesterov) momentum O."""
        state = self.state[p]
        assert p.grad is not None
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = torch.zeros_like(p.grad)
        buf = state["momentum_buffer"]
        buf.lerp_(p.grad, 1 - group["momentum"])
        direction = p.grad.lerp(buf, group["momentum"]) if group["nesterov"] else buf
        return newton_schulz_orthogonalize(direction, group["ns_steps"], NS_COEFFICIENTS, group["eps"], self.ns_dtype)

    def shape_update(self, p: torch.Tensor, group: dict[str, Any], o: torch.Tensor) -> torch.Tensor:
        """The update applied before the step size: identity (plain Muon); subclasses normalise it."""
        return o

    def group_scale(self, group: dict[str, Any]) -> float:
        """Multiplier of the group's learning rate (1; C3O returns the group's credit)."""
        return 1.0

    def after_update(self, p: torch.Tensor, group: dict[str, Any], step: torch.Tensor, lr: float) -> None:
        """Hook run after `p` moved by `-lr * step` (C3O records the group's contribution here)."""

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        """One step over every parameter that has a gradient."""
        loss = closure_loss(closure)
        for group in self.param_groups:
            lr = float(group["lr"]) * self.group_scale(group)
            for p, _grad in params_with_grad(group):
                update = self.shape_update(p, group, self.orthogonal(p, group))
                scaled_lr = lr * muon_lr_ratio(p.shape)
                p.mul_(1 - float(group["lr"]) * group["weight_decay"])
                p.add_(update, alpha=-scaled_lr)
                self.after_update(p, group, update, scaled_lr)
        return loss


class SecondMomentOrthogonal(OrthogonalMomentum):
    """Orthogonal momentum whose update is divided by a second moment (NorMuon, AdaMuon share this)."""

    def __init__(self, params: Any, beta2: float = 0.95, norm_eps: float = 1e-8, **kwargs: Any) -> None:
        if not 0 <= beta2 < 1:
            raise ValueError(f"beta2 must be in [0, 1), got {beta2}")
        super().__init__(params, beta2=beta2, norm_eps=norm_eps, **kwargs)

    @staticmethod
    def match_norm(normalised: torch.Tensor, o: torch.Tensor, eps: float) -> torch.Tensor:
        """`normalised` rescaled to O's Frobenius norm, so that Muon's learning rate carries over."""
        return normalised * (o.norm() / normalised.norm().clamp(min=eps))
