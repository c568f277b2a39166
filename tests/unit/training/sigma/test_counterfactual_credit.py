"""Counterfactual credit: singles out the group whose update moved the probe loss, restores parameters exactly."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cascadelab.config import OptimizerSettings
from cascadelab.models.sigma import SigmaConfig, SigmaForCausalLM, apply_instant_plan
from cascadelab.training.optimizers.c3o import layer_groups
from cascadelab.training.optimizers.factory import build_optimizers, credit_optimizers
from cascadelab.training.sigma.counterfactual_credit import CounterfactualCredit, CreditSettings


class _TwoHeads(nn.Module):
    """A body shared by a probed head and a head the probe never reads."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Linear(4, 4)
        self.probed = nn.Linear(4, 1)
        self.unprobed = nn.Linear(4, 1)


def _setup() -> tuple[_TwoHeads, CounterfactualCredit, torch.Tensor, torch.Tensor]:
    model = _TwoHeads()
    groups = {
        "body": list(model.body.parameters()),
        "probed": list(model.probed.parameters()),
        "unprobed": list(model.unprobed.parameters()),
    }
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(16, 4, generator=gen), torch.randn(16, 1, generator=gen)
    return model, CounterfactualCredit(groups), x, y


def _probe(model: _TwoHeads, x: torch.Tensor, y: torch.Tensor) -> float:
    return float(F.mse_loss(model.probed(torch.tanh(model.body(x))), y))


def _step(
    model: _TwoHeads, credit: CounterfactualCredit, x: torch.Tensor, y: torch.Tensor, lrs: dict[str, float]
) -> None:
    optimizer = torch.optim.SGD(
        [{"params": list(getattr(model, name).parameters()), "lr": lr} for name, lr in lrs.items()]
    )
    hidden = torch.tanh(model.body(x))
    loss = F.mse_loss(model.probed(hidden), y) + F.mse_loss(model.unprobed(hidden), -y)
    optimizer.zero_grad()
    loss.backward()
    credit.before_step()
    optimizer.step()
    credit.after_step()


def test_only_the_group_whose_update_moved_the_probe_loss_gets_credit() -> None:
    model, credit, x, y = _setup()
    # body frozen (lr 0): only `probed` and `unprobed` move, and the probe never reads `unprobed`
    _step(model, credit, x, y, {"body": 0.0, "probed": 0.5, "unprobed": 0.5})
    assert credit.update_norms["unprobed"] > 0 and credit.update_norms["body"] == 0.0
    estimates = credit.estimate(lambda: _probe(model, x, y))
    assert estimates["probed"] > 1e-3
    assert estimates["body"] == 0.0
    assert estimates["unprobed"] == 0.0
    assert credit.effective_calls == 1


def test_an_update_that_hurt_gets_a_negative_estimate() -> None:
    model, credit, x, y = _setup()
    _step(model, credit, x, y, {"body": 0.0, "probed": -0.5, "unprobed": 0.0})  # gradient ascent
    estimates = credit.estimate(lambda: _probe(model, x, y))
    assert estimates["probed"] < -1e-3


def test_parameters_are_bit_identical_after_estimate() -> None:
    model, credit, x, y = _setup()
    _step(model, credit, x, y, {"body": 0.3, "probed": 0.3, "unprobed": 0.3})
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    credit.estimate(lambda: _probe(model, x, y))
    for name, p in model.named_parameters():
        assert torch.equal(p, before[name]), name


def test_estimate_needs_a_recorded_update() -> None:
    credit = _setup()[1]
    with pytest.raises(RuntimeError, match="no recorded update"):
        credit.estimate(lambda: 0.0)
    with pytest.raises(RuntimeError, match=r"after_step\(\) without before_step\(\)"):
        credit.after_step()
    assert credit.effective_calls == 0


def test_c3o_mapping_is_bounded_with_mean_one_before_clipping() -> None:
    _, credit, _, _ = _setup()
    mapped = credit.to_c3o_credit({"a": 3.0, "b": 1.0, "c": -2.0, "d": 0.0})
    assert mapped == {"a": 2.0, "b": 1.0, "c": 0.5, "d": 0.5}  # shares 3, 1, 0, 0 clipped to [0.5, 2]
    assert credit.to_c3o_credit({"a": 1.2, "b": 0.8}) == pytest.approx({"a": 1.2, "b": 0.8})
    assert credit.to_c3o_credit({"a": -1.0, "b": 0.0}) == {"a": 1.0, "b": 1.0}  # nothing helped: neutral
    damped = CounterfactualCredit({"a": [nn.Parameter(torch.zeros(1))]}, CreditSettings(strength=0.5))
    assert damped.to_c3o_credit({"a": 3.0, "b": 1.0}) == pytest.approx({"a": 1.25, "b": 0.75})


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match=r"need 0 < credit_min <= 1 <= credit_max, got 1.5, 2.0"):
        CreditSettings(credit_min=1.5)
    with pytest.raises(ValueError, match=r"counterfactual_credit.strength: must be in \(0, 1\], got 0"):
        CreditSettings(strength=0)


def test_credit_feeds_c3o_on_the_tiny_sigma_model() -> None:
    torch.manual_seed(0)
    model = apply_instant_plan(SigmaForCausalLM(SigmaConfig.from_preset("tiny")), checkpoint_blocks=False)
    groups = {name: params for name, params in layer_groups(model.named_parameters()).items() if name != "other"}
    credit = CounterfactualCredit(groups)
    ids = torch.randint(3, 64, (4, 12), generator=torch.Generator().manual_seed(2))
    optimizers = build_optimizers(model, OptimizerSettings(name="c3o"))
    (c3o,) = credit_optimizers(optimizers)
    model(input_ids=ids, labels=ids).loss.backward()
    credit.before_step()
    for optimizer in optimizers:
        optimizer.step()
    credit.after_step()
    with torch.no_grad():
        estimates = credit.estimate(lambda: float(model(input_ids=ids, labels=ids).loss))
    assert set(estimates) == {"layer_0", "layer_1"}
    mapped = credit.to_c3o_credit(estimates)
    c3o.set_credit(mapped)
    assert c3o.credits() == pytest.approx(mapped)
    assert all(0.5 <= value <= 2.0 for value in mapped.values())
