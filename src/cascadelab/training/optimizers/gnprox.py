"""GNProx: a diagonal Gauss–Newton preconditioned step with a proximal (trust-region) clip.

GNProx has no public definition; this is cascadelab's, in the family of Sophia (Liu et al., 2023).
For every parameter (element-wise, so it serves matrices, embeddings, norms and biases alike):

    m ← β₁ m + (1 − β₁) g                                    (momentum of the gradient g)
    h ← β₂ h + (1 − β₂) g ⊙ g      every k steps (and at step 1)   (diagonal Gauss–Newton / empirical
                                                               Fisher estimate of the curvature)
    p ← p (1 − η λ) − η · clip(m / max(ρ h, ε), −1, 1)

The preconditioned direction m / (ρ h) is the minimiser of the local quadratic model
⟨m, Δ⟩ + ½ ρ Δᵀ diag(h) Δ; the clip is the proximal step onto the box |Δᵢ| ≤ η, so no coordinate
moves more than η however flat the curvature estimate says the loss is (where h is tiny the step
degenerates to sign-momentum of size η). ρ absorbs the batch-size factor of Sophia's estimator.
The element-wise update is one fused kernel (:func:`cascadelab.kernels.gnprox_update`).
"""

from __future__ import annotations

from typing import Any

import torch

from cascadelab.kernels._triton import Backend
from cascadelab.kernels.gnprox_update import GNProxStep, gnprox_update
from cascadelab.training.optimizers.stepping import closure_loss, params_with_grad


class GNProx(torch.optim.Optimizer):
    """Diagonal Gauss–Newton preconditioned momentum with a per-coordinate clip at the learning rate."""

    def __init__(
        self,
        params: Any,
        lr: float = 3e-4,
        betas: tuple[float, float] = (0.965, 0.99),
        rho: float = 0.05,
        eps: float = 1e-12,
        weight_decay: float = 0.0,
        hessian_interval: int = 10,
        backend: Backend = "auto",
    ) -> None:
        if lr <= 0 or rho <= 0 or eps <= 0 or weight_decay < 0 or hessian_interval < 1:
            raise ValueError(
                f"invalid GNProx hyper-parameters lr={lr} rho={rho} eps={eps} wd={weight_decay} k={hessian_interval}"
            )
        if not all(0 <= b < 1 for b in betas):
            raise ValueError(f"betas must be in [0, 1), got {betas}")
        defaults = {"lr": lr, "betas": betas, "rho": rho, "eps": eps, "weight_decay": weight_decay}
        super().__init__(params, defaults)
        self.hessian_interval = hessian_interval
        self.backend: Backend = backend

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        """One fused GNProx step per parameter; the curvature estimate refreshes every `hessian_interval` steps."""
        loss = closure_loss(closure)
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p, grad in params_with_grad(group):
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.contiguous_format)
                    state["hessian"] = torch.zeros_like(p, memory_format=torch.contiguous_format)
                refresh = state["step"] % self.hessian_interval == 0
                state["step"] += 1
                gnprox_update(
                    p,
                    grad.contiguous(),
                    state["exp_avg"],
                    state["hessian"],
                    GNProxStep(
                        float(group["lr"]), beta1, beta2, group["rho"], group["eps"], group["weight_decay"], refresh
                    ),
                    self.backend,
                )
        return loss
