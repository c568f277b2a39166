"""The LEGO confidence threshold: exit confidences and the threshold that routes a target share."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from tests.unit.models.lego.lego_helpers import batch, ids

from cascadelab.models.lego import LEGOTransformer
from cascadelab.models.lego.calibration import (
    compute_confidence,
    compute_confidence_threshold,
    exit_confidences,
    threshold_for_ratio,
)


def test_threshold_for_ratio_is_exact_on_known_confidences() -> None:
    conf = torch.tensor([0.9, 0.1, 0.5, 0.3, 0.7, 0.2, 1.0, 0.4, 0.8, 0.6])
    for ratio, expected in [(0.3, 0.35), (0.5, 0.55), (0.0, 0.0)]:
        t = threshold_for_ratio(conf, ratio)
        assert t == pytest.approx(expected)
        assert int((conf < t).sum()) == round(ratio * 10)
    assert int((conf < threshold_for_ratio(conf, 1.0)).sum()) == 10
    with pytest.raises(ValueError, match=r"target_ratio: must be in \[0, 1\], got 1.5"):
        threshold_for_ratio(conf, 1.5)


def test_compute_confidence_is_max_softmax_of_the_exit_head(extended: LEGOTransformer) -> None:
    h = extended.exit_hidden_states(ids())
    expected = F.softmax(extended.forward_all_layers(ids())[1], -1).max(-1).values
    assert torch.allclose(compute_confidence(extended, h), expected, atol=1e-6)


def test_confidence_threshold_puts_the_target_ratio_below_it(shallow: LEGOTransformer) -> None:
    val = [batch(seed=s) for s in range(4)]
    conf = exit_confidences(shallow, val)
    assert conf.numel() == 4 * 3 * 5  # 4 batches x 3 rows x 5 positions whose next label is a response token
    for ratio in (0.25, 0.5, 0.75):
        t = compute_confidence_threshold(shallow, val, ratio)
        assert float((conf < t).float().mean()) == ratio


# Seeded tiny model (seed 0), first batch: values recorded once; a change is a behaviour change.
GOLDEN_CONFIDENCES = [0.122243, 0.096093, 0.100217, 0.13285]
GOLDEN_THRESHOLD = 0.123978


def test_golden_confidences_stay_exact(shallow: LEGOTransformer) -> None:
    conf = exit_confidences(shallow, [batch(seed=0)])
    assert [round(float(c), 6) for c in conf[:4]] == GOLDEN_CONFIDENCES
    assert round(compute_confidence_threshold(shallow, [batch(seed=0)], 0.5), 6) == GOLDEN_THRESHOLD
