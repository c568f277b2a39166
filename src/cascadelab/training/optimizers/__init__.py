"""Optimizers shared by the training loops."""

from cascadelab.training.optimizers.muon import (
    MuonAdamWSettings,
    MuonFP32,
    build_muon_adamw,
    newton_schulz_orthogonalize,
    split_muon_params,
)

__all__ = [
    "MuonAdamWSettings",
    "MuonFP32",
    "build_muon_adamw",
    "newton_schulz_orthogonalize",
    "split_muon_params",
]
