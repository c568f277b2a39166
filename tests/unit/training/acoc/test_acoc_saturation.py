import pytest
import torch
from tests.unit.models.acoc.acoc_helpers import make_batch, make_model

from cascadelab.data.batches import LMBatch
from cascadelab.training.acoc.saturation import SaturationParams, combined_score, measure_saturation


def _batches(count=2):
    return [LMBatch("t", **make_batch(seed=10 + i)) for i in range(count)]


def test_metrics_are_bounded_and_loads_sum_to_one():
    model = make_model(num_experts=3)
    stats = measure_saturation(model, _batches(), SaturationParams())
    assert [len(layer) for layer in stats] == [3, 3]
    for layer in stats:
        assert sum(s.load for s in layer) == pytest.approx(1.0, abs=1e-5)
        for s in layer:
            assert 0 <= s.activation_saturation <= 1 and 0 <= s.dead_ratio <= 1 and 0 <= s.score <= 1
            assert s.grad_norm > 0
    assert all(p.grad is None for p in model.parameters())
    assert not any(moe.capture or moe.captured for moe in model.moe_layers)


def test_a_dead_expert_scores_as_saturated():
    model = make_model(num_experts=2)
    with torch.no_grad():
        model.moe_layers[0].expert(1).blocks[0].up.bias.fill_(-50.0)  # every unit far into GELU's flat tail
    stats = measure_saturation(model, _batches(), SaturationParams())[0]
    assert stats[1].dead_ratio == 1.0 and stats[1].activation_saturation == pytest.approx(1.0)
    assert stats[1].activation_variance == pytest.approx(0.0, abs=1e-6)
    assert stats[0].dead_ratio < 0.5 and stats[1].score > stats[0].score


def test_top_k_routing_weights_the_statistics_by_routed_tokens():
    model = make_model(num_experts=3, top_k=1)
    stats = measure_saturation(model, _batches(), SaturationParams())
    for layer in stats:
        assert sum(s.load for s in layer) == pytest.approx(1.0, abs=1e-5)


def test_combined_score_is_the_weighted_mean_of_its_components():
    params = SaturationParams(grad_ref=0.01, weight_load=0.0, weight_dead=2.0)
    score = combined_score(0.01, saturation=0.2, dead=0.5, variance=0.25, load=1.0, params=params)
    assert score == pytest.approx((0.5 + 0.2 + 2 * 0.5 + 0.75) / 5)
