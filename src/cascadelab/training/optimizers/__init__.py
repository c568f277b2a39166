"""Optimizers shared by the training loops; :mod:`.factory` builds them from `cascadelab.config.OptimizerSettings`.

The factory is imported by its module path (``cascadelab.training.optimizers.factory``) so that
importing the optimizers does not import the kernels.
"""

from cascadelab.training.optimizers.muon import (
    MuonFP32,
    build_muon_adamw,
    newton_schulz_orthogonalize,
    split_muon_params,
)

__all__ = [
    "MuonFP32",
    "build_muon_adamw",
    "newton_schulz_orthogonalize",
    "split_muon_params",
]
