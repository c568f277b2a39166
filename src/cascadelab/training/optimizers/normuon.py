"""NorMuon: Muon whose orthogonalised update is normalised neuron-wise by a second moment.

After Li et al. (2025), "NorMuon: Making Muon more efficient and scalable". With O = NS₅(N) the
orthogonalised momentum of a (rows x cols) matrix (see :mod:`orthogonal`), each output neuron (row i)
keeps an EMA of its mean squared update, and the update is rescaled to keep the Frobenius norm of O:

    v_i ← β₂ v_i + (1 − β₂) · mean_j O_ij²
    Ô_ij = O_ij / (sqrt(v_i) + ε)
    U = Ô · ‖O‖_F / ‖Ô‖_F
    W ← W (1 − η λ) − η · sqrt(max(1, rows / cols)) · U

so Muon's learning rate carries over, while rows whose updates have been large get relatively smaller
steps (Muon alone leaves the per-neuron norms uneven).
"""

from __future__ import annotations

from typing import Any

import torch

from cascadelab.training.optimizers.orthogonal import SecondMomentOrthogonal


class NorMuon(SecondMomentOrthogonal):
    """Muon + a per-row (neuron-wise) second moment of the orthogonalised update."""

    def shape_update(self, p: torch.Tensor, group: dict[str, Any], o: torch.Tensor) -> torch.Tensor:
        """Divide each row of O by its RMS EMA, then restore O's Frobenius norm."""
        state = self.state[p]
        if "row_second_moment" not in state:
            state["row_second_moment"] = torch.zeros(o.shape[0], 1, dtype=o.dtype, device=o.device)
        v = state["row_second_moment"]
        v.lerp_(o.square().mean(dim=1, keepdim=True), 1 - group["beta2"])
        normalised = o / (v.sqrt() + group["norm_eps"])
        return self.match_norm(normalised, o, group["norm_eps"])
