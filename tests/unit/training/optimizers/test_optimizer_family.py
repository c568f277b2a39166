"""The six optimizers chosen by `optimizer.name`: each trains, the Muon-family split is exact, each
update follows its documented equations."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cascadelab.config import OPTIMIZER_NAMES, MuonAdamWSettings, OptimizerSettings, ParamsError, parse_params
from cascadelab.kernels import GNProxStep, gnprox_update
from cascadelab.models.sigma import SigmaConfig, SigmaForCausalLM
from cascadelab.training.optimizers import split_muon_params
from cascadelab.training.optimizers.adamuon import AdaMuon
from cascadelab.training.optimizers.c3o import C3O, layer_groups
from cascadelab.training.optimizers.factory import build_optimizers, credit_optimizers
from cascadelab.training.optimizers.gnprox import GNProx
from cascadelab.training.optimizers.normuon import NorMuon
from cascadelab.training.optimizers.orthogonal import OrthogonalMomentum


class Regressor(nn.Module):
    """A small MLP with an embedding (to AdamW), hidden matrices (to the Muon family) and biases."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(16, 8)
        self.layers = nn.ModuleList([nn.Linear(8, 32), nn.Linear(32, 32)])
        self.head = nn.Linear(32, 1)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Predict one value per id."""
        x = self.embed(ids)
        for layer in self.layers:
            x = torch.tanh(layer(x))
        return self.head(x).squeeze(-1)


def _settings(name: str) -> OptimizerSettings:
    return OptimizerSettings(
        name=name,
        learning_rate=1e-2,
        muon=MuonAdamWSettings(muon_lr=0.02, adamw_lr=1e-2),
        gnprox={"learning_rate": 3e-3, "hessian_interval": 2},
    )


@pytest.mark.parametrize("name", OPTIMIZER_NAMES)
def test_each_optimizer_lowers_a_regression_loss(name: str) -> None:
    torch.manual_seed(0)
    model = Regressor()
    ids = torch.arange(16)
    target = torch.sin(ids.float())
    optimizers = build_optimizers(model, _settings(name))
    losses = []
    for step in range(60):
        loss = (model(ids) - target).pow(2).mean()
        losses.append(float(loss.detach()))
        loss.backward()
        for opt in optimizers:
            opt.step()
            opt.zero_grad()
        for opt in credit_optimizers(optimizers):
            if step % 10 == 9:
                opt.update_credit()
    assert losses[-1] < 0.5 * losses[0], (name, losses[0], losses[-1])


@pytest.mark.parametrize("name", ["muon", "normuon", "adamuon", "c3o"])
def test_muon_family_pairs_a_matrix_optimizer_with_adamw_over_the_rest(name: str) -> None:
    model = Regressor()
    matrix_opt, adamw = build_optimizers(model, _settings(name))
    matrices = {id(p) for g in matrix_opt.param_groups for p in g["params"]}
    rest = {id(p) for g in adamw.param_groups for p in g["params"]}
    assert matrices == {id(model.layers[0].weight), id(model.layers[1].weight), id(model.head.weight)}
    assert matrices.isdisjoint(rest) and len(matrices | rest) == len(list(model.parameters()))
    assert isinstance(adamw, torch.optim.AdamW)


def test_split_is_exact_on_sigma_and_exclusions_are_configurable() -> None:
    model = SigmaForCausalLM(SigmaConfig.from_preset("tiny"))
    names = {id(p): n for n, p in model.named_parameters()}
    linear_weights = {
        names[id(m.weight)] for m in model.modules() if isinstance(m, nn.Linear) and m.weight.ndim == 2
    } - {"model.embed_tokens.weight"}  # the tied lm_head is the embedding
    muon, adamw = split_muon_params(model)
    assert {names[id(p)] for p in muon} == linear_weights
    assert "model.embed_tokens.weight" in {names[id(p)] for p in adamw}
    # tied embedding/head: Muon only when neither side is excluded
    muon, _ = split_muon_params(model, exclude_embeddings=False, exclude_lm_head=True)
    assert "model.embed_tokens.weight" not in {names[id(p)] for p in muon}
    muon, _ = split_muon_params(model, exclude_embeddings=False, exclude_lm_head=False)
    assert "model.embed_tokens.weight" in {names[id(p)] for p in muon}
    muon, adamw = split_muon_params(model, exclude=["*.mixer.out_proj.weight"])
    moved = {names[id(p)] for p in adamw} & linear_weights
    assert moved and all(n.endswith(".mixer.out_proj.weight") for n in moved)
    assert all(p.ndim == 2 for p in muon)


def test_orthogonal_update_is_orthogonal_and_shaped_updates_keep_its_norm() -> None:
    gen = torch.Generator().manual_seed(0)
    for cls in (OrthogonalMomentum, NorMuon, AdaMuon):
        p = nn.Parameter(torch.randn(24, 12, generator=gen))
        p.grad = torch.randn(24, 12, generator=gen)
        opt = cls([p], momentum=0.0, nesterov=False)
        group = opt.param_groups[0]
        o = opt.orthogonal(p, group)
        singular = torch.linalg.svdvals(o)
        assert singular.min() > 0.5 and singular.max() < 1.3  # NS₅'s band around 1
        shaped = opt.shape_update(p, group, o)
        torch.testing.assert_close(shaped.norm(), o.norm())
    with pytest.raises(ValueError, match="only supports 2-D parameters"):
        NorMuon([nn.Parameter(torch.zeros(3))])


def test_normuon_equalises_row_norms() -> None:
    o = torch.diag(torch.tensor([4.0, 1.0, 1.0, 1.0])) @ torch.ones(4, 4) / 4
    p = nn.Parameter(torch.zeros(4, 4))
    opt = NorMuon([p], beta2=0.0)
    shaped = opt.shape_update(p, opt.param_groups[0], o)
    rows = shaped.norm(dim=1)
    torch.testing.assert_close(rows, rows.mean().expand(4), rtol=1e-4, atol=1e-6)


def test_c3o_credit_follows_each_group_contribution_within_bounds() -> None:
    big, small = nn.Parameter(torch.zeros(4, 4)), nn.Parameter(torch.zeros(4, 4))
    opt = C3O(
        [{"params": [big], "name": "big"}, {"params": [small], "name": "small"}],
        credit_min=0.5,
        credit_max=2.0,
        credit_ema=1.0,
    )
    gen = torch.Generator().manual_seed(0)
    big.grad, small.grad = torch.randn(4, 4, generator=gen) * 10, torch.randn(4, 4, generator=gen) * 0.01
    opt.step()
    credit = opt.update_credit()
    assert 1.99 < credit["big"] <= 2.0 and credit["small"] == 0.5  # shares ~2 and ~0 (clipped up to 0.5)
    assert opt.credit_updates == 1
    assert all(g["contribution"] == 0.0 for g in opt.param_groups)
    opt.set_credit({"small": 9.0})
    assert opt.credits()["small"] == 2.0
    with pytest.raises(KeyError, match="unknown C3O group 'nope'"):
        opt.set_credit({"nope": 1.0})


def test_c3o_groups_hidden_matrices_by_layer() -> None:
    model = SigmaForCausalLM(SigmaConfig.from_preset("tiny"))
    optimizers = build_optimizers(model, OptimizerSettings(name="c3o"))
    (c3o,) = credit_optimizers(optimizers)
    assert sorted(c3o.credits()) == ["layer_0", "layer_1"]
    assert set(layer_groups([("a.layers.3.w", nn.Parameter(torch.zeros(1)))])) == {"layer_3"}


def test_gnprox_reference_follows_its_equations() -> None:
    p = torch.tensor([1.0, 1.0, 1.0])
    g = torch.tensor([0.2, -0.2, 1e-6])
    m, h = torch.zeros(3), torch.zeros(3)
    step = GNProxStep(lr=0.1, beta1=0.5, beta2=0.5, rho=1.0, eps=1e-12, weight_decay=0.0, update_h=True)
    gnprox_update(p, g, m, h, step)
    torch.testing.assert_close(m, 0.5 * g)
    torch.testing.assert_close(h, 0.5 * g * g)
    # m / (ρ h) = 1 / g: clipped to ±1 everywhere here, so each coordinate moves by exactly lr
    torch.testing.assert_close(p, torch.tensor([0.9, 1.1, 0.9]))
    with pytest.raises(ValueError, match="float32 tensors of one shape"):
        gnprox_update(p, g[:2], m, h, step)


def test_gnprox_refreshes_curvature_every_k_steps() -> None:
    p = nn.Parameter(torch.ones(3))
    opt = GNProx([p], hessian_interval=3)
    seen = []
    for _ in range(6):
        p.grad = torch.full((3,), 0.1)
        opt.step()
        seen.append(float(opt.state[p]["hessian"][0]))
    refreshed = [i for i in range(6) if i == 0 or seen[i] != seen[i - 1]]
    assert refreshed == [0, 3]


def test_unknown_optimizer_is_a_one_line_params_error() -> None:
    with pytest.raises(ParamsError, match=r"sigma_pretrain\.optimizer\.name: must be 'adamw', 'muon'"):
        parse_params({"sigma_pretrain": {"optimizer": {"name": "sgd"}}})
