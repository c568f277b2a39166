"""Seeded tiny LEGO models shared by the LEGO model tests (one thread: small tensors on a shared machine)."""

from __future__ import annotations

import pytest
import torch
from tests.unit.models.lego.lego_helpers import tiny_config

from cascadelab.models.lego import LEGOTransformer, build_lego_model

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def shallow() -> LEGOTransformer:
    return build_lego_model(tiny_config(), seed=0).eval()


@pytest.fixture(scope="module")
def extended(shallow: LEGOTransformer) -> LEGOTransformer:
    model = LEGOTransformer.extend_from(shallow, 4, routing_threshold=0.5, freeze_lower=True, seed=1)
    with torch.no_grad():  # move the upper block off its function-preserving zero init
        for layer in model.model.layers[2:]:
            for p in layer.parameters():
                p.add_(0.2 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    return model.eval()
