"""Muon for 2-D hidden matrices and AdamW for the rest, with a float32 Newton–Schulz step for CPUs.

``torch.optim.Muon`` orthogonalises each update with a quintic Newton–Schulz iteration run in
bfloat16. On a CPU without bf16 matrix units that is ~17x slower than AdamW (STACK-NOTES); run in
float32 it costs ~1.7x AdamW. :class:`MuonFP32` is ``torch.optim.Muon`` (same arguments, same
validation, same update rule) with the iteration in a chosen dtype, float32 by default.

Which parameters go where (Keller Jordan's recipe): the weights of the hidden linear layers go to
Muon; embeddings, the LM head, norms, biases, routers and other non-matrix parameters go to AdamW.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float64": torch.float64}


def newton_schulz_orthogonalize(
    grad: torch.Tensor,
    steps: int = 5,
    coefficients: tuple[float, float, float] = NS_COEFFICIENTS,
    eps: float = 1e-7,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Approximate U Vᵀ of ``grad = U S Vᵀ`` by the quintic Newton–Schulz iteration, computed in ``dtype``."""
    if grad.ndim != 2:
        raise ValueError(f"Newton-Schulz needs a 2-D matrix, got shape {tuple(grad.shape)}")
    a, b, c = coefficients
    x = grad.to(dtype)
    transposed = grad.shape[0] > grad.shape[1]
    if transposed:
        x = x.T
    x = x / x.norm().clamp(min=eps)
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return (x.T if transposed else x).to(grad.dtype)


class MuonFP32(torch.optim.Muon):
    """``torch.optim.Muon`` with the Newton–Schulz iteration in ``ns_dtype`` (float32 by default)."""

    def __init__(self, params: Any, *args: Any, ns_dtype: torch.dtype = torch.float32, **kwargs: Any) -> None:
        if ns_dtype not in _DTYPES.values():
            raise ValueError(f"ns_dtype must be one of float32, bfloat16, float64, got {ns_dtype}")
        super().__init__(params, *args, **kwargs)
        self.ns_dtype = ns_dtype

    @staticmethod
    def _lr_ratio(adjust_lr_fn: str | None, shape: torch.Size) -> float:
        rows, cols = shape[:2]
        if adjust_lr_fn is None or adjust_lr_fn == "original":
            return math.sqrt(max(1.0, rows / cols))
        if adjust_lr_fn == "match_rms_adamw":
            return 0.2 * math.sqrt(max(rows, cols))
        return 1.0

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        """One Muon step: momentum, (Nesterov) update, orthogonalisation, decoupled weight decay."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, momentum, wd = float(group["lr"]), group["momentum"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p.grad)
                buf = state["momentum_buffer"]
                buf.lerp_(p.grad, 1 - momentum)
                update = p.grad.lerp(buf, momentum) if group["nesterov"] else buf
                update = newton_schulz_orthogonalize(
                    update, group["ns_steps"], group["ns_coefficients"], group["eps"], self.ns_dtype
                )
                p.mul_(1 - lr * wd)
                p.add_(update, alpha=-lr * self._lr_ratio(group["adjust_lr_fn"], p.shape))
        return loss


class MuonAdamWSettings(BaseModel):
    """Hyper-parameters of the Muon + AdamW pair built by :func:`build_muon_adamw`."""

    model_config = ConfigDict(extra="forbid")

    muon_lr: float = Field(0.02, gt=0)
    muon_momentum: float = Field(0.95, ge=0, lt=1)
    muon_weight_decay: float = Field(0.0, ge=0)
    muon_nesterov: bool = True
    muon_ns_steps: int = Field(5, ge=1, le=20)
    muon_ns_dtype: Literal["float32", "bfloat16", "float64"] = "float32"
    muon_adjust_lr_fn: Literal["original", "match_rms_adamw"] = "original"
    adamw_lr: float = Field(3e-3, gt=0)
    adamw_betas: tuple[float, float] = (0.9, 0.95)
    adamw_weight_decay: float = Field(0.0, ge=0)
    adamw_eps: float = Field(1e-8, gt=0)


def split_muon_params(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(Muon params, AdamW params): weights of hidden ``nn.Linear`` layers vs everything else.

    The input and output embeddings (tied or not) always go to AdamW, as do norms, biases, routers
    and other parameters that are not the weight of a linear map.
    """
    excluded: set[int] = set()
    for getter in ("get_input_embeddings", "get_output_embeddings"):
        module = getattr(model, getter)() if hasattr(model, getter) else None
        if isinstance(module, nn.Module):
            excluded.update(id(p) for p in module.parameters())
    for module in model.modules():
        if isinstance(module, nn.Embedding):
            excluded.update(id(p) for p in module.parameters())
    muon_ids = {
        id(m.weight) for m in model.modules() if isinstance(m, nn.Linear) and id(m.weight) not in excluded
    }
    muon: list[nn.Parameter] = []
    adamw: list[nn.Parameter] = []
    for p in model.parameters():  # deduplicated: a tied weight is listed once
        if p.requires_grad:
            (muon if id(p) in muon_ids else adamw).append(p)
    return muon, adamw


def build_muon_adamw(model: nn.Module, settings: MuonAdamWSettings) -> list[torch.optim.Optimizer]:
    """[MuonFP32 over the hidden matrices, AdamW over the rest]; step and zero both every iteration."""
    muon_params, adamw_params = split_muon_params(model)
    if not muon_params:
        raise ValueError(f"{type(model).__name__} has no hidden nn.Linear weight for Muon to optimise")
    muon = MuonFP32(
        muon_params,
        lr=settings.muon_lr,
        weight_decay=settings.muon_weight_decay,
        momentum=settings.muon_momentum,
        nesterov=settings.muon_nesterov,
        ns_steps=settings.muon_ns_steps,
        adjust_lr_fn=settings.muon_adjust_lr_fn,
        ns_dtype=_DTYPES[settings.muon_ns_dtype],
    )
    optimizers: list[torch.optim.Optimizer] = [muon]
    if adamw_params:
        optimizers.append(
            torch.optim.AdamW(
                adamw_params,
                lr=settings.adamw_lr,
                betas=settings.adamw_betas,
                weight_decay=settings.adamw_weight_decay,
                eps=settings.adamw_eps,
                fused=True,  # one kernel for all tensors: SIGMA has ~100 small ones
            )
        )
    return optimizers
