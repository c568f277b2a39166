import pytest
import torch
from tests.unit.models.acoc.acoc_helpers import make_batch, make_model

from cascadelab.data.batches import LMBatch
from cascadelab.models.acoc.growth import split_expert
from cascadelab.training.acoc.continual import (
    RouterEWC,
    RoutingReplay,
    active_tasks,
    forgetting,
    new_tasks,
    router_parameters,
    stage_tasks,
)

SCHEDULE = {"add": 0, "sub": 0, "mul1": 3}


def test_schedule_introduces_tasks_in_stages():
    assert active_tasks(SCHEDULE, 2) == ["add", "sub"] and new_tasks(SCHEDULE, 2) == []
    assert new_tasks(SCHEDULE, 3) == ["mul1"] and new_tasks(SCHEDULE, 0) == []
    assert stage_tasks(SCHEDULE, 4) == (["mul1"], ["add", "sub"])
    assert stage_tasks(SCHEDULE, 1) == (["add", "sub"], [])


def test_router_ewc_is_zero_at_the_anchor_and_grows_with_router_moves():
    model = make_model(num_experts=2)
    batches = [LMBatch("add", **make_batch(seed=s)) for s in range(3)]
    ewc = RouterEWC(lam=2.0)
    ewc.fit(model, batches)
    assert set(ewc.fisher) == set(router_parameters(model))
    assert torch.cat([f.reshape(-1) for f in ewc.fisher.values()]).mean().item() == pytest.approx(1.0)
    assert ewc.penalty(model).item() == 0.0
    with torch.no_grad():
        model.moe_layers[0].expert(0).router_weight.add_(0.1)
    value = ewc.penalty(model)
    assert value.item() > 0
    value.backward()
    assert all(p.grad is None for name, p in model.named_parameters() if ".router_" not in name)


def test_routing_replay_keeps_old_decisions_through_a_split():
    model = make_model(num_experts=2)
    replay = RoutingReplay(capacity=20)
    replay.collect(model, [LMBatch("add", **make_batch(seed=4))], torch.Generator().manual_seed(0))
    assert len(replay) == 20 and replay.loss(model).item() == pytest.approx(0.0, abs=1e-6)
    old_targets = [t.clone() for t in replay.targets]
    split_expert(model, 0, 1)
    replay.refresh(model)
    merged = replay.targets[0][:, :1], replay.targets[0][:, 1:].sum(-1, keepdim=True)
    torch.testing.assert_close(torch.cat(merged, dim=1), old_targets[0])
    with torch.no_grad():
        model.moe_layers[1].expert(0).router_bias.add_(1.0)
    assert replay.loss(model).item() > 1e-3


def test_forgetting_is_the_mean_accuracy_drop_of_old_tasks():
    assert forgetting({"add": 0.9, "sub": 0.8}, {"add": 0.7, "sub": 0.85, "mul1": 0.1}) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="no final accuracy for task 'sub'"):
        forgetting({"sub": 0.5}, {"add": 0.5})
