"""BitLinear: ternary weights, int8 activations, straight-through gradients, inference cache."""

from __future__ import annotations

import torch

from cascadelab.models.sigma import BitLinear, FeatureCalls, int8_activation_ste, ternary_weight_ste


def test_ste_quantisers_give_ternary_weights_and_int8_activations() -> None:
    gen = torch.Generator().manual_seed(0)
    w, x = torch.randn(8, 16, generator=gen), torch.randn(3, 16, generator=gen)
    wq = ternary_weight_ste(w)
    scale = w.abs().mean()
    assert set((wq / scale).round().unique().tolist()) <= {-1.0, 0.0, 1.0}
    torch.testing.assert_close(wq, (wq / scale).round() * scale)
    xq = int8_activation_ste(x)
    step = x.abs().amax(-1, keepdim=True) / 127
    codes = xq / step
    torch.testing.assert_close(codes, codes.round(), atol=1e-4, rtol=0)
    assert codes.abs().max() <= 127.0 + 1e-4


def test_straight_through_estimator_passes_gradients_unchanged() -> None:
    w = torch.randn(4, 6, requires_grad=True)
    x = torch.randn(2, 6, requires_grad=True)
    upstream_w, upstream_x = torch.randn(4, 6), torch.randn(2, 6)
    (ternary_weight_ste(w) * upstream_w).sum().backward()
    (int8_activation_ste(x) * upstream_x).sum().backward()
    assert torch.equal(w.grad, upstream_w) and torch.equal(x.grad, upstream_x)


def test_inference_cache_quantises_once_and_rebuilds_when_weights_change() -> None:
    torch.manual_seed(0)
    features = FeatureCalls()
    layer = BitLinear(16, 8, features=features)
    x = torch.randn(5, 16)
    train_out = layer(x)
    layer.eval()
    with torch.no_grad():
        first = layer(x)
        layer(x)
    assert layer.cache_builds == 1
    torch.testing.assert_close(first, train_out.detach(), atol=1e-5, rtol=1e-5)  # integer path == fake quant
    with torch.no_grad():
        layer.weight.mul_(-1.0)
        assert torch.allclose(layer(x), -first, atol=1e-5)
    assert layer.cache_builds == 2
    layer.train()
    assert layer._cache is None
    assert features["bitlinear"] == 4 and features["triton"] == 0
