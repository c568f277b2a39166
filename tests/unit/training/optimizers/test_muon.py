"""Muon (float32 Newton–Schulz) for hidden matrices, AdamW for the rest."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from cascadelab.config import MuonAdamWSettings
from cascadelab.models.sigma import SigmaConfig, SigmaForCausalLM
from cascadelab.training.optimizers import MuonFP32, build_muon_adamw, newton_schulz_orthogonalize, split_muon_params


def test_newton_schulz_in_float32_orthogonalises() -> None:
    g = torch.randn(48, 24, generator=torch.Generator().manual_seed(0))
    o = newton_schulz_orthogonalize(g, steps=5, dtype=torch.float32)
    singular = torch.linalg.svdvals(o)
    assert o.dtype == torch.float32 and o.shape == g.shape
    assert singular.min() > 0.5 and singular.max() < 1.3  # the quintic's band around 1, not exactly 1
    with pytest.raises(ValueError, match="needs a 2-D matrix"):
        newton_schulz_orthogonalize(torch.randn(3, 4, 5))


def test_muon_fp32_step_is_torch_muon_with_a_float32_iteration(monkeypatch: pytest.MonkeyPatch) -> None:
    # give torch's Muon our float32 iteration: the two optimizers must then agree step for step
    import torch.optim._muon as torch_muon

    monkeypatch.setattr(
        torch_muon,
        "_zeropower_via_newtonschulz",
        lambda g, coefficients, steps, eps: newton_schulz_orthogonalize(g, steps, coefficients, eps),
    )
    torch.manual_seed(0)
    ours, theirs = nn.Linear(16, 32, bias=False), nn.Linear(16, 32, bias=False)
    theirs.load_state_dict(ours.state_dict())
    initial = ours.weight.detach().clone()
    opt_ours = MuonFP32(ours.parameters(), lr=0.02, weight_decay=0.1, adjust_lr_fn="match_rms_adamw")
    opt_theirs = torch.optim.Muon(theirs.parameters(), lr=0.02, weight_decay=0.1, adjust_lr_fn="match_rms_adamw")
    x = torch.randn(8, 16)
    for model, opt in ((ours, opt_ours), (theirs, opt_theirs)):
        for _ in range(3):
            model(x).pow(2).mean().backward()
            opt.step()
            opt.zero_grad()
    torch.testing.assert_close(ours.weight, theirs.weight, atol=1e-6, rtol=1e-5)
    assert (ours.weight - initial).abs().max() > 1e-3


def test_muon_rejects_non_matrix_parameters_and_bad_dtypes() -> None:
    with pytest.raises(ValueError, match="Muon only supports 2D parameters"):
        MuonFP32([nn.Parameter(torch.zeros(4))])
    with pytest.raises(ValueError, match="ns_dtype must be one of"):
        MuonFP32([nn.Parameter(torch.zeros(2, 2))], ns_dtype=torch.int8)
    with pytest.raises(ValidationError):
        MuonAdamWSettings(muon_lr=0.0)
    with pytest.raises(ValidationError):
        MuonAdamWSettings(adam_lr=1e-3)  # type: ignore[call-arg]  # unknown key
    with pytest.raises(ValueError, match=r"has no hidden nn\.Linear weight"):
        build_muon_adamw(nn.Sequential(nn.Embedding(4, 4), nn.LayerNorm(4)), MuonAdamWSettings())


def test_split_sends_hidden_matrices_to_muon_and_the_rest_to_adamw() -> None:
    model = SigmaForCausalLM(SigmaConfig.from_preset("tiny"))
    muon, adamw = split_muon_params(model)
    names = {id(p): n for n, p in model.named_parameters()}
    muon_names = {names[id(p)] for p in muon}
    adamw_names = {names[id(p)] for p in adamw}
    assert all(p.ndim == 2 for p in muon)
    assert "model.embed_tokens.weight" in adamw_names  # tied with lm_head: listed once
    assert not any("norm" in n or "router" in n or "bias" in n for n in muon_names)
    assert "model.layers.0.mixer.in_proj.weight" in muon_names
    assert "model.layers.1.mixer.kv_b_proj.weight" in muon_names
    assert len(muon) + len(adamw) == len(list(model.parameters()))


def test_built_optimizers_update_both_groups() -> None:
    torch.manual_seed(0)
    model = SigmaForCausalLM(SigmaConfig.from_preset("tiny"))
    optimizers = build_muon_adamw(model, MuonAdamWSettings())
    assert [type(o).__name__ for o in optimizers] == ["MuonFP32", "AdamW"]
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    ids = torch.randint(3, 64, (2, 8))
    model(ids).logits.logsumexp(-1).mean().backward()
    for opt in optimizers:
        opt.step()
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert "model.layers.0.mixer.in_proj.weight" in moved and "model.embed_tokens.weight" in moved
