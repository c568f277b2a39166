"""Optimizers shared by the training loops; :mod:`.factory` builds them from :class:`OptimizerSettings`.

The factory is imported by its module path (``cascadelab.training.optimizers.factory``) so that
loading params (which needs only the settings) does not import the kernels.
"""

from cascadelab.training.optimizers.muon import (
    MuonAdamWSettings,
    MuonFP32,
    build_muon_adamw,
    newton_schulz_orthogonalize,
    split_muon_params,
)
from cascadelab.training.optimizers.settings import (
    MUON_FAMILY,
    OPTIMIZER_NAMES,
    C3OSettings,
    GNProxSettings,
    OptimizerSettings,
    SecondMomentSettings,
)

__all__ = [
    "MUON_FAMILY",
    "OPTIMIZER_NAMES",
    "C3OSettings",
    "GNProxSettings",
    "MuonAdamWSettings",
    "MuonFP32",
    "OptimizerSettings",
    "SecondMomentSettings",
    "build_muon_adamw",
    "newton_schulz_orthogonalize",
    "split_muon_params",
]
