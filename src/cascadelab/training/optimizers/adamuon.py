"""AdaMuon: Muon with an Adam-style element-wise second moment of the orthogonalised update.

After Si et al. (2025), "AdaMuon: Adaptive Muon Optimizer". With O = NS₅(N) (see :mod:`orthogonal`):

    V ← β₂ V + (1 − β₂) O ⊙ O
    Ô = O / (sqrt(V / (1 − β₂ᵗ)) + ε)            (bias-corrected, element-wise)
    U = Ô · ‖O‖_F / ‖Ô‖_F
    W ← W (1 − η λ) − η · sqrt(max(1, rows / cols)) · U

The rescaling to O's Frobenius norm keeps Muon's learning rate meaningful; NorMuon is the same idea
with one second moment per row instead of one per element.
"""

from __future__ import annotations

from typing import Any

import torch

from cascadelab.training.optimizers.orthogonal import SecondMomentOrthogonal


class AdaMuon(SecondMomentOrthogonal):
    """Muon + an element-wise, bias-corrected second moment of the orthogonalised update."""

    def shape_update(self, p: torch.Tensor, group: dict[str, Any], o: torch.Tensor) -> torch.Tensor:
        """Divide O element-wise by its bias-corrected RMS EMA, then restore O's Frobenius norm."""
        state = self.state[p]
        if "second_moment" not in state:
            state["second_moment"] = torch.zeros_like(o)
            state["adamuon_step"] = 0
        state["adamuon_step"] += 1
        v = state["second_moment"]
        v.lerp_(o.square(), 1 - group["beta2"])
        correction = 1 - group["beta2"] ** state["adamuon_step"]
        normalised = o / ((v / correction).sqrt() + group["norm_eps"])
        return self.match_norm(normalised, o, group["norm_eps"])
