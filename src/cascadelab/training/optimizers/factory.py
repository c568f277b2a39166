"""Build the optimizers a training loop steps, from :class:`OptimizerSettings`.

`adamw` and `gnprox` cover every parameter with one optimizer. The Muon family covers the 2-D hidden
matrices (:func:`split_muon_params`, exclusions configurable) and pairs it with AdamW for the rest.
The loop steps and zeroes every optimizer of the list each iteration.
"""

from __future__ import annotations

import torch
from torch import nn

from cascadelab.config import OptimizerSettings
from cascadelab.training.optimizers.adamuon import AdaMuon
from cascadelab.training.optimizers.c3o import C3O, layer_groups
from cascadelab.training.optimizers.gnprox import GNProx
from cascadelab.training.optimizers.muon import build_matrix_pair, build_muon_adamw, matrix_kwargs
from cascadelab.training.optimizers.normuon import NorMuon


def _trainable(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def build_optimizers(model: nn.Module, settings: OptimizerSettings) -> list[torch.optim.Optimizer]:
    """The optimizers for `settings.name`: one for adamw/gnprox, [matrix optimizer, AdamW] for the Muon family."""
    if settings.name == "adamw":
        return [
            torch.optim.AdamW(
                _trainable(model),
                lr=settings.learning_rate,
                betas=settings.betas,
                weight_decay=settings.weight_decay,
                fused=True,
            )
        ]
    if settings.name == "gnprox":
        g = settings.gnprox
        return [
            GNProx(
                _trainable(model),
                lr=g.learning_rate,
                betas=g.betas,
                rho=g.rho,
                eps=g.eps,
                weight_decay=g.weight_decay,
                hessian_interval=g.hessian_interval,
                backend=g.backend,
            )
        ]
    if settings.name == "muon":
        return build_muon_adamw(model, settings.muon)
    return build_matrix_pair(
        model, settings.muon, settings.name, lambda matrices: _matrix_optimizer(model, settings, matrices)
    )


def _matrix_optimizer(
    model: nn.Module, settings: OptimizerSettings, matrices: list[nn.Parameter]
) -> torch.optim.Optimizer:
    """The normuon, adamuon or c3o optimizer over `model`'s hidden matrices (c3o: one group per layer)."""
    common = matrix_kwargs(settings.muon)
    if settings.name == "normuon":
        return NorMuon(matrices, beta2=settings.normuon.beta2, norm_eps=settings.normuon.eps, **common)
    if settings.name == "adamuon":
        return AdaMuon(matrices, beta2=settings.adamuon.beta2, norm_eps=settings.adamuon.eps, **common)
    wanted = {id(p) for p in matrices}
    named = [(n, p) for n, p in model.named_parameters() if id(p) in wanted]
    groups = [{"params": ps, "name": name} for name, ps in layer_groups(named).items()]
    c = settings.c3o
    return C3O(groups, credit_min=c.credit_min, credit_max=c.credit_max, credit_ema=c.credit_ema, **common)


def credit_optimizers(optimizers: list[torch.optim.Optimizer]) -> list[C3O]:
    """The C3O optimizers of a list (those that take a credit signal)."""
    return [o for o in optimizers if isinstance(o, C3O)]
