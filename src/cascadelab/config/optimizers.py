"""Validated settings of every optimizer (the `optimizer` section of a training params block)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from cascadelab.config.base import StrictModel

OptimizerName = Literal["adamw", "muon", "normuon", "adamuon", "c3o", "gnprox"]
OPTIMIZER_NAMES: tuple[str, ...] = ("adamw", "muon", "normuon", "adamuon", "c3o", "gnprox")
MUON_FAMILY: tuple[str, ...] = ("muon", "normuon", "adamuon", "c3o")


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
    muon_exclude_embeddings: bool = True
    muon_exclude_lm_head: bool = True
    muon_exclude: list[str] = Field(default_factory=list)
    adamw_lr: float = Field(3e-3, gt=0)
    adamw_betas: tuple[float, float] = (0.9, 0.95)
    adamw_weight_decay: float = Field(0.0, ge=0)
    adamw_eps: float = Field(1e-8, gt=0)


class SecondMomentSettings(StrictModel):
    """NorMuon / AdaMuon: the EMA rate of the second moment of the orthogonalised update."""

    beta2: float = Field(0.95, ge=0, lt=1)
    eps: float = Field(1e-8, gt=0)


class C3OSettings(StrictModel):
    """C3O: credit bounds, the credit EMA rate and how many steps one credit window lasts."""

    credit_min: float = Field(0.5, gt=0, le=1)
    credit_max: float = Field(2.0, ge=1)
    credit_ema: float = Field(0.5, gt=0, le=1)
    credit_interval: int = Field(50, gt=0)


class GNProxSettings(StrictModel):
    """GNProx: step size, moment rates, curvature scale, refresh interval and kernel backend."""

    learning_rate: float = Field(3e-4, gt=0)
    betas: tuple[float, float] = (0.965, 0.99)
    rho: float = Field(0.05, gt=0)
    eps: float = Field(1e-12, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    hessian_interval: int = Field(10, gt=0)
    backend: Literal["auto", "triton", "ref"] = "auto"


class OptimizerSettings(StrictModel):
    """Which optimizer trains the model and the settings of each (only the chosen one's are used).

    `adamw` uses `learning_rate`/`betas`/`weight_decay` over every parameter. The Muon family (`muon`,
    `normuon`, `adamuon`, `c3o`) uses `muon` for the split and both halves' rates, plus its own block.
    `gnprox` uses `gnprox` over every parameter.
    """

    name: OptimizerName = "adamw"
    learning_rate: float = Field(1e-3, gt=0)
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = Field(0.0, ge=0)
    muon: MuonAdamWSettings = Field(default_factory=lambda: MuonAdamWSettings())
    normuon: SecondMomentSettings = Field(default_factory=lambda: SecondMomentSettings())
    adamuon: SecondMomentSettings = Field(default_factory=lambda: SecondMomentSettings())
    c3o: C3OSettings = Field(default_factory=lambda: C3OSettings())
    gnprox: GNProxSettings = Field(default_factory=lambda: GNProxSettings())

    @model_validator(mode="after")
    def _check_bounds(self) -> OptimizerSettings:
        for beta in (*self.betas, *self.gnprox.betas):
            if not 0 <= beta < 1:
                raise ValueError(f"betas: each beta must be in [0, 1) (got {beta})")
        return self
