"""The fused GNProx parameter update: Triton kernel, PyTorch reference, dispatcher.

For a parameter p with gradient g, momentum m and diagonal Gauss–Newton curvature estimate h (all
float32, same shape), one step with learning rate η, weight decay λ and curvature scale ρ is

    m ← β₁ m + (1 − β₁) g
    h ← β₂ h + (1 − β₂) g ⊙ g          (only on curvature-refresh steps)
    p ← p (1 − η λ) − η · clip(m / max(ρ h, ε), −1, 1)

element-wise, in place. :mod:`cascadelab.training.optimizers.gnprox` explains the estimator.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cascadelab.kernels._triton import Backend, select_backend

try:
    from cascadelab.kernels._gnprox_update_triton import _gnprox_update_kernel
except ImportError:  # pragma: no cover - no triton: the reference path serves every device
    _gnprox_update_kernel = None

BLOCK = 1024


@dataclass(frozen=True)
class GNProxStep:
    """Hyper-parameters of one GNProx step, and whether it refreshes the curvature estimate."""

    lr: float
    beta1: float
    beta2: float
    rho: float
    eps: float
    weight_decay: float
    update_h: bool


def gnprox_update_ref(p: torch.Tensor, g: torch.Tensor, m: torch.Tensor, h: torch.Tensor, step: GNProxStep) -> None:
    """Reference: the GNProx step with PyTorch ops, updating `p`, `m` and (if `update_h`) `h` in place."""
    m.mul_(step.beta1).add_(g, alpha=1 - step.beta1)
    if step.update_h:
        h.mul_(step.beta2).addcmul_(g, g, value=1 - step.beta2)
    direction = (m / (h * step.rho).clamp(min=step.eps)).clamp_(-1.0, 1.0)
    p.mul_(1 - step.lr * step.weight_decay).add_(direction, alpha=-step.lr)


def gnprox_update_triton(p: torch.Tensor, g: torch.Tensor, m: torch.Tensor, h: torch.Tensor, step: GNProxStep) -> None:
    """Triton launcher, same contract as :func:`gnprox_update_ref` (contiguous tensors)."""
    if _gnprox_update_kernel is None:
        raise RuntimeError("triton is not installed: use gnprox_update_ref")
    n = p.numel()
    grid = (-(-n // BLOCK),)
    _gnprox_update_kernel[grid](
        p,
        g,
        m,
        h,
        n,
        step.lr,
        step.beta1,
        step.beta2,
        step.rho,
        step.eps,
        step.weight_decay,
        UPDATE_H=step.update_h,
        BLOCK=BLOCK,
    )


def gnprox_update(
    p: torch.Tensor, g: torch.Tensor, m: torch.Tensor, h: torch.Tensor, step: GNProxStep, backend: Backend = "auto"
) -> None:
    """Dispatch the fused GNProx step: Triton on CUDA, the reference elsewhere (or per ``backend``)."""
    tensors = (p, g, m, h)
    if any(t.shape != p.shape for t in tensors) or any(t.dtype != torch.float32 for t in tensors):
        raise ValueError("gnprox_update: p, g, m and h must be float32 tensors of one shape")
    if select_backend(p, backend) == "triton":
        if not all(t.is_contiguous() for t in tensors):
            raise ValueError("gnprox_update: the Triton kernel needs contiguous tensors")
        gnprox_update_triton(p, g, m, h, step)
    else:
        gnprox_update_ref(p, g, m, h, step)
