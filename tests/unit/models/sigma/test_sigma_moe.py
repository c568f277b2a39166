"""MoE: top-k routing, aux-loss-free bias balancing, auxiliary loss, routing statistics."""

from __future__ import annotations

import torch

from cascadelab.models.sigma import FeatureCalls, SigmaConfig, SigmaMoE


def make_moe(**overrides: object) -> SigmaMoE:
    torch.manual_seed(0)
    config = SigmaConfig.from_preset("tiny", **overrides)
    moe = SigmaMoE(config, FeatureCalls())
    for p in moe.parameters():
        torch.nn.init.normal_(p, std=0.2)
    return moe


def test_output_equals_gated_sum_of_the_top_k_experts() -> None:
    moe = make_moe().eval()
    x = torch.randn(2, 5, 32)
    out, _ = moe(x)
    flat = x.reshape(-1, 32)
    scores = torch.sigmoid(flat @ moe.router.weight.t())
    idx = scores.topk(2, dim=-1).indices
    want = moe.shared_experts(flat)
    for t in range(flat.shape[0]):
        gates = scores[t, idx[t]] / scores[t, idx[t]].sum()
        for g, e in zip(gates, idx[t], strict=True):
            want[t] += g * moe.experts[int(e)](flat[t])
    torch.testing.assert_close(out.reshape(-1, 32), want, atol=1e-5, rtol=1e-5)
    assert torch.isclose(moe.last_load.sum(), torch.tensor(1.0))  # fractions of the (token, slot) pairs


def test_balancing_bias_moves_load_toward_uniform() -> None:
    moe = make_moe(moe_bias_update_rate=0.05, moe_aux_loss_coef=0.0).train()
    with torch.no_grad():
        moe.router.weight[0] += 3.0  # expert 0 wins every token at first
    x = torch.randn(64, 32).abs()
    moe(x)
    first = moe.routing_stats()
    for _ in range(60):
        moe(x)
    last = moe.routing_stats()
    assert first.load[0] > 0.45
    assert last.bias[0] < 0 and last.bias[0] == last.bias.min()  # the over-loaded expert is pushed down most
    assert last.load.max() < first.load.max()
    assert last.summary()["load_max_over_mean"] < first.summary()["load_max_over_mean"]


def test_bias_is_frozen_in_eval_and_aux_loss_only_in_training() -> None:
    moe = make_moe(moe_aux_loss_coef=0.01).eval()
    x = torch.randn(16, 32)
    moe(x)
    moe(x)
    assert torch.equal(moe.router.e_score_correction_bias, torch.zeros(4))
    assert moe(x)[1].item() == 0.0
    moe.train()
    aux = moe(x)[1]
    assert aux.item() > 0 and aux.requires_grad


def test_dense_and_sparse_dispatch_compute_the_same_function() -> None:
    sparse, dense = make_moe(moe_dispatch="sparse").train(), make_moe(moe_dispatch="dense").train()
    dense.load_state_dict(sparse.state_dict())
    assert not sparse.dense_dispatch and dense.dense_dispatch
    x = torch.randn(3, 7, 32)
    out_s, _ = sparse(x)
    out_d, _ = dense(x)
    torch.testing.assert_close(out_d, out_s, atol=1e-5, rtol=1e-5)
    out_s.square().sum().backward()
    out_d.square().sum().backward()
    for (name, a), b in zip(sparse.named_parameters(), dense.parameters(), strict=True):
        torch.testing.assert_close(b.grad, a.grad, atol=1e-5, rtol=1e-4, msg=name)


def test_auto_dispatch_keeps_bitlinear_experts_sparse() -> None:
    assert make_moe().dense_dispatch
    assert not make_moe(bitlinear_families=["moe_routed"]).dense_dispatch
