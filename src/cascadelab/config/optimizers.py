"""Validated settings of every optimizer (the `optimizer` section of a training params block)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from cascadelab.config.base import StrictModel, section_field
from cascadelab.config.fields import NumberPair

OptimizerName = Literal["adamw", "muon", "normuon", "adamuon", "c3o", "gnprox"]
OPTIMIZER_NAMES: tuple[str, ...] = ("adamw", "muon", "normuon", "adamuon", "c3o", "gnprox")
MUON_FAMILY: tuple[str, ...] = ("muon", "normuon", "adamuon", "c3o")


class MuonAdamWSettings(BaseModel):
    """Hyper-parameters of the Muon + AdamW pair built by :func:`build_muon_adamw`."""

    model_config = ConfigDict(extra="forbid", strict=True)

    muon_lr: float = Field(0.02, gt=0, description="Muon learning rate of the hidden 2-D weights")
    muon_momentum: float = Field(0.95, ge=0, lt=1, description="Muon momentum coefficient")
    muon_weight_decay: float = Field(0.0, ge=0, description="Muon decoupled weight decay")
    muon_nesterov: bool = Field(True, description="Nesterov momentum in Muon's update")
    muon_ns_steps: int = Field(5, ge=1, le=20, description="Newton-Schulz iterations that orthogonalise each update")
    muon_ns_dtype: Literal["float32", "bfloat16", "float64"] = Field(
        "float32", description="dtype the Newton-Schulz iteration runs in (float32: ~10x faster than bfloat16 on CPUs)"
    )
    muon_adjust_lr_fn: Literal["original", "match_rms_adamw"] = Field(
        "original",
        description="original: lr x sqrt(max(1, rows/cols)) | match_rms_adamw: lr x 0.2 sqrt(max(rows, cols))",
    )
    muon_exclude_embeddings: bool = Field(True, description="input embeddings go to AdamW rather than Muon")
    muon_exclude_lm_head: bool = Field(True, description="the LM head goes to AdamW rather than Muon")
    muon_exclude: list[str] = Field(
        default_factory=list, description="globs of parameter names sent to AdamW (e.g. `*.mixer.out_proj.weight`)"
    )
    adamw_lr: float = Field(
        3e-3, gt=0, description="AdamW learning rate of the non-Muon parameters (embeddings, head, norms, biases)"
    )
    adamw_betas: NumberPair = Field((0.9, 0.95), description="AdamW (beta1, beta2) of the non-Muon parameters")
    adamw_weight_decay: float = Field(0.0, ge=0, description="AdamW decoupled weight decay of the non-Muon parameters")
    adamw_eps: float = Field(1e-8, gt=0, description="AdamW epsilon of the non-Muon parameters")


class SecondMomentSettings(StrictModel):
    """NorMuon / AdaMuon: the EMA rate of the second moment of the orthogonalised update."""

    beta2: float = Field(0.95, ge=0, lt=1, description="EMA rate of the second moment of the orthogonalised update")
    eps: float = Field(1e-8, gt=0, description="added to the second moment's square root before dividing")


class C3OSettings(StrictModel):
    """C3O: credit bounds, the credit EMA rate and how many steps one credit window lasts."""

    credit_min: float = Field(0.5, gt=0, le=1, description="lower bound of a parameter group's learning-rate credit")
    credit_max: float = Field(2.0, ge=1, description="upper bound of a parameter group's learning-rate credit")
    credit_ema: float = Field(0.5, gt=0, le=1, description="EMA rate that blends a new credit into the old one")
    credit_interval: int = Field(
        50, gt=0, description="steps in one credit window (the credit updates once per window)"
    )


class GNProxSettings(StrictModel):
    """GNProx: step size, moment rates, curvature scale, refresh interval and kernel backend."""

    learning_rate: float = Field(3e-4, gt=0, description="η: step size, also the per-coordinate clip of the update")
    betas: NumberPair = Field(
        (0.965, 0.99), description="(β1, β2): EMA rates of the gradient momentum and of the diagonal curvature estimate"
    )
    rho: float = Field(
        0.05, gt=0, description="ρ: curvature scale in the step m / max(ρ h, ε) (absorbs the batch-size factor)"
    )
    eps: float = Field(1e-12, gt=0, description="ε: floor of ρ h in the step's denominator")
    weight_decay: float = Field(0.0, ge=0, description="decoupled weight decay")
    hessian_interval: int = Field(
        10, gt=0, description="steps between two refreshes of the curvature estimate (and at step 1)"
    )
    backend: Literal["auto", "triton", "ref"] = Field(
        "auto",
        description="auto: Triton on CUDA, else the reference | triton (needs CUDA) | ref: the PyTorch reference",
    )


class OptimizerSettings(StrictModel):
    """Which optimizer trains the model and the settings of each (only the chosen one's are used).

    `adamw` uses `learning_rate`/`betas`/`weight_decay` over every parameter. The Muon family (`muon`,
    `normuon`, `adamuon`, `c3o`) uses `muon` for the split and both halves' rates, plus its own block.
    `gnprox` uses `gnprox` over every parameter.
    """

    name: OptimizerName = Field(
        "adamw", description="adamw | muon | normuon | adamuon | c3o | gnprox (README's optimizer table)"
    )
    learning_rate: float = Field(
        1e-3, gt=0, description="AdamW learning rate (adamw only; the Muon family uses muon.muon_lr / muon.adamw_lr)"
    )
    betas: NumberPair = Field((0.9, 0.95), description="AdamW (beta1, beta2) (adamw only)")
    weight_decay: float = Field(0.0, ge=0, description="AdamW decoupled weight decay (adamw only)")
    muon: MuonAdamWSettings = section_field(
        MuonAdamWSettings, "Muon + AdamW split and rates (muon, normuon, adamuon, c3o)"
    )
    normuon: SecondMomentSettings = section_field(SecondMomentSettings, "NorMuon's second moment (normuon only)")
    adamuon: SecondMomentSettings = section_field(SecondMomentSettings, "AdaMuon's second moment (adamuon only)")
    c3o: C3OSettings = section_field(C3OSettings, "C3O's credit (c3o only)")
    gnprox: GNProxSettings = section_field(GNProxSettings, "GNProx's settings (gnprox only)")

    @model_validator(mode="after")
    def _check_bounds(self) -> OptimizerSettings:
        for beta in (*self.betas, *self.gnprox.betas):
            if not 0 <= beta < 1:
                raise ValueError(f"betas: each beta must be in [0, 1) (got {beta})")
        return self
