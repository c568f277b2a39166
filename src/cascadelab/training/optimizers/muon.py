"""Muon for 2-D hidden matrices and AdamW for the rest, with a float32 Newton–Schulz step for CPUs.

``torch.optim.Muon`` orthogonalises each update with a quintic Newton–Schulz iteration run in
bfloat16. On a CPU without bf16 matrix units that is ~17x slower than AdamW (STACK-NOTES); run in
float32 it costs ~1.7x AdamW. :class:`MuonFP32` is ``torch.optim.Muon`` (same arguments, same
validation, same update rule) with the iteration in a chosen dtype, float32 by default.

Which parameters go where (Keller Jordan's recipe): the weights of the hidden linear layers go to
Muon; embeddings, the LM head, norms, biases, routers and other non-matrix parameters go to AdamW.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from cascadelab.config import MuonAdamWSettings
from cascadelab.training.optimizers.stepping import closure_loss, params_with_grad

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
        loss = closure_loss(closure)
        for group in self.param_groups:
            lr, momentum, wd = float(group["lr"]), group["momentum"], group["weight_decay"]
            for p, grad in params_with_grad(group):
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(grad)
                buf = state["momentum_buffer"]
                buf.lerp_(grad, 1 - momentum)
                update = grad.lerp(buf, momentum) if group["nesterov"] else buf
                update = newton_schulz_orthogonalize(
                    update, group["ns_steps"], group["ns_coefficients"], group["eps"], self.ns_dtype
                )
                p.mul_(1 - lr * wd)
                p.add_(update, alpha=-lr * self._lr_ratio(group["adjust_lr_fn"], p.shape))
        return loss


def _module_from(model: nn.Module, getter: str) -> nn.Module | None:
    """`model.<getter>()` when the model has that method and it returns a module (HF embeddings getters)."""
    method = getattr(model, getter, None)
    module = method() if callable(method) else None
    return module if isinstance(module, nn.Module) else None


def split_muon_params(
    model: nn.Module,
    exclude_embeddings: bool = True,
    exclude_lm_head: bool = True,
    exclude: Sequence[str] = (),
) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(Muon params, AdamW params): 2-D weights of hidden ``nn.Linear`` layers vs everything else.

    Norms, biases, routers and every parameter that is not the weight of a linear map go to AdamW.
    The input embeddings (``exclude_embeddings``) and the LM head (``exclude_lm_head``) go to AdamW
    too unless told otherwise; a tied pair goes to Muon only when neither is excluded. Parameters
    whose name matches a glob in ``exclude`` (e.g. ``"*.mixer.out_proj.weight"``) go to AdamW.
    """
    embed_ids: set[int] = set()
    for module in model.modules():
        if isinstance(module, nn.Embedding):
            embed_ids.update(id(p) for p in module.parameters())
    inputs = _module_from(model, "get_input_embeddings")
    if isinstance(inputs, nn.Module):
        embed_ids.update(id(p) for p in inputs.parameters())
    outputs = _module_from(model, "get_output_embeddings")
    head_ids = {id(p) for p in outputs.parameters()} if isinstance(outputs, nn.Module) else set()
    excluded: set[int] = set()
    if exclude_embeddings:
        excluded |= embed_ids
    if exclude_lm_head:
        excluded |= head_ids
    linear_ids = {id(m.weight) for m in model.modules() if isinstance(m, nn.Linear)}
    muon: list[nn.Parameter] = []
    adamw: list[nn.Parameter] = []
    for name, p in model.named_parameters():  # deduplicated: a tied weight is listed once
        if not p.requires_grad:
            continue
        eligible = (
            (id(p) in linear_ids or id(p) in embed_ids | head_ids)
            and p.ndim == 2
            and id(p) not in excluded
            and not any(fnmatch.fnmatchcase(name, pattern) for pattern in exclude)
        )
        (muon if eligible else adamw).append(p)
    return muon, adamw


def split_for(model: nn.Module, settings: MuonAdamWSettings) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """:func:`split_muon_params` with the exclusions of `settings`."""
    return split_muon_params(
        model, settings.muon_exclude_embeddings, settings.muon_exclude_lm_head, settings.muon_exclude
    )


def adamw_for(params: list[nn.Parameter], settings: MuonAdamWSettings) -> torch.optim.AdamW:
    """The AdamW half of a Muon-family pair (fused: SIGMA has ~100 small non-matrix tensors)."""
    return torch.optim.AdamW(
        params,
        lr=settings.adamw_lr,
        betas=settings.adamw_betas,
        weight_decay=settings.adamw_weight_decay,
        eps=settings.adamw_eps,
        fused=True,
    )


def matrix_kwargs(settings: MuonAdamWSettings) -> dict[str, Any]:
    """The arguments every Muon-family matrix optimizer takes alike, from the `muon_*` settings."""
    return {
        "lr": settings.muon_lr,
        "momentum": settings.muon_momentum,
        "weight_decay": settings.muon_weight_decay,
        "nesterov": settings.muon_nesterov,
        "ns_steps": settings.muon_ns_steps,
        "ns_dtype": _DTYPES[settings.muon_ns_dtype],
    }


def build_matrix_pair(
    model: nn.Module,
    settings: MuonAdamWSettings,
    label: str,
    make: Callable[[list[nn.Parameter]], torch.optim.Optimizer],
) -> list[torch.optim.Optimizer]:
    """[`make`(the hidden matrices), AdamW over the rest, if any]; `label` names the matrix optimizer in the error."""
    matrices, rest = split_for(model, settings)
    if not matrices:
        raise ValueError(f"{type(model).__name__} has no hidden nn.Linear weight for {label} to optimise")
    matrix_opt = make(matrices)
    return [matrix_opt, adamw_for(rest, settings)] if rest else [matrix_opt]


def build_muon_adamw(model: nn.Module, settings: MuonAdamWSettings) -> list[torch.optim.Optimizer]:
    """[MuonFP32 over the hidden matrices, AdamW over the rest]; step and zero both every iteration."""
    return build_matrix_pair(
        model,
        settings,
        "Muon",
        lambda matrices: MuonFP32(matrices, adjust_lr_fn=settings.muon_adjust_lr_fn, **matrix_kwargs(settings)),
    )
