import math

import pytest
import torch
from tests.unit.models.acoc.acoc_helpers import make_batch, make_model

from cascadelab.models.acoc.accounting import (
    count_parameters,
    expert_size,
    soft_parameter_count,
    task_parameter_counts,
)
from cascadelab.training.acoc.penalty import GrowthPenalty, PenaltyParams, double_penalty


def test_double_penalty_has_the_seed_formula():
    value = double_penalty(
        torch.tensor(3.0),
        2.0,
        {"a": torch.tensor(5.0), "b": torch.tensor(1.0)},
        {"a": 4.0, "b": 2.0},
        alpha=0.5,
        beta=0.25,
    )
    assert value.item() == pytest.approx(0.5 * math.log(1 + 3.0 / 2.0) + 0.25 * (5.0 - 4.0) ** 2)


def test_double_penalty_rejects_a_task_without_threshold():
    with pytest.raises(ValueError, match="thresholds: no threshold for task 'b'"):
        double_penalty(torch.tensor(1.0), 1.0, {"b": torch.tensor(1.0)}, {}, 1.0, 1.0)


def test_global_term_gradient_on_each_gate_matches_the_formula(batch):
    model = make_model(num_experts=2)
    p_baseline = 10_000.0
    penalty = GrowthPenalty(PenaltyParams(alpha=1.0, beta=0.0), p_baseline)
    penalty.add_tasks(model, ["t"])
    model(**batch)
    value, _ = penalty(model, "t")
    value.backward()
    soft = float(soft_parameter_count(model).detach())
    for moe in model.moe_layers:
        for expert in moe.expert_list():
            gate = torch.sigmoid(expert.gate_logit.detach())
            expected = 1.0 / (1.0 + soft / p_baseline) * expert_size(expert) / p_baseline * gate * (1 - gate)
            assert expert.gate_logit.grad.item() == pytest.approx(float(expected), rel=1e-4)
            assert expert.gate_logit.grad.item() > 0  # gradient descent pushes every gate toward zero


def test_task_term_pushes_gates_and_routing_of_an_oversized_task():
    model = make_model(num_experts=2)
    penalty = GrowthPenalty(PenaltyParams(alpha=0.0, beta=1.0, threshold_ratio=0.1), 1_000.0)
    penalty.add_tasks(model, ["a", "b"])
    model(**make_batch(seed=2))
    penalty(model, "b")  # b's usage enters the moving average
    model.zero_grad()
    model(**make_batch(seed=3))
    value, info = penalty(model, "a")
    assert value.item() > 0 and info["p_a"] > penalty.thresholds["a"]
    value.backward()
    experts = model.moe_layers[0].expert_list()
    assert all(e.gate_logit.grad.item() > 0 for e in experts)
    assert any(e.router_weight.grad.abs().sum() > 0 for e in experts)


def test_task_counts_partition_the_global_count(batch):
    model = make_model(num_experts=3)
    model(**batch)
    usage_a = [moe.last_weights.mean(0) for moe in model.moe_layers]
    usage_b = [torch.tensor([0.0, 0.0, 1.0]) for _ in model.moe_layers]
    hard = task_parameter_counts(model, {"a": usage_a, "b": usage_b}, gated=False)
    assert float(sum(hard.values()).detach()) == pytest.approx(count_parameters(model).total)
    soft = task_parameter_counts(model, {"a": usage_a, "b": usage_b}, gated=True)
    assert float(sum(soft.values()).detach()) == pytest.approx(float(soft_parameter_count(model).detach()))


def test_thresholds_start_at_a_fair_share_and_relax():
    model = make_model(num_experts=1)
    penalty = GrowthPenalty(PenaltyParams(threshold_ratio=1.5, relax_factor=1.2), 1_000.0)
    penalty.add_tasks(model, ["a", "b"])
    total = count_parameters(model).total
    assert penalty.thresholds == {"a": pytest.approx(0.75 * total), "b": pytest.approx(0.75 * total)}
    assert penalty.relax("a") == pytest.approx(0.9 * total)
