"""BitNet b1.58 quantisers, 2-bit packing and the reference ternary x int8 matmul."""

from __future__ import annotations

import pytest
import torch

from cascadelab.kernels import (
    PackedTernaryWeight,
    bitlinear_matmul,
    pack_ternary,
    quantize_activation_int8,
    quantize_weight_ternary,
    unpack_ternary,
)


def test_weights_quantise_to_ternary_with_absmean_scale() -> None:
    w = torch.tensor([[0.5, -2.0, 0.1], [1.0, 0.0, -0.4]])
    codes, scale = quantize_weight_ternary(w)
    assert codes.dtype == torch.int8
    assert set(codes.flatten().tolist()) <= {-1, 0, 1}
    torch.testing.assert_close(scale, w.abs().mean())
    assert codes.tolist() == [[1, -1, 0], [1, 0, -1]]  # round(w / 0.6667), clamped


def test_activations_quantise_per_token_to_int8() -> None:
    x = torch.tensor([[1.0, -0.5, 0.25], [10.0, 5.0, -10.0]])
    codes, scale = quantize_activation_int8(x)
    assert codes.dtype == torch.int8
    assert codes.tolist() == [[127, -64, 32], [127, 64, -127]]  # round half to even: -63.5 -> -64
    torch.testing.assert_close(scale.squeeze(-1), torch.tensor([1 / 127, 10 / 127]))


@pytest.mark.parametrize("k", [4, 7, 70])
def test_pack_unpack_round_trip(k: int) -> None:
    codes = torch.randint(-1, 2, (9, k), generator=torch.Generator().manual_seed(k), dtype=torch.int8)
    packed = pack_ternary(codes)
    assert packed.dtype == torch.uint8 and packed.shape == (-(-k // 4), 9)
    assert torch.equal(unpack_ternary(packed, k), codes)


def test_reference_matmul_equals_dequantised_float_product() -> None:
    gen = torch.Generator().manual_seed(0)
    w, x = torch.randn(6, 10, generator=gen), torch.randn(3, 10, generator=gen)
    w_codes, w_scale = quantize_weight_ternary(w)
    x_codes, x_scale = quantize_activation_int8(x)
    y = bitlinear_matmul(x_codes, x_scale, PackedTernaryWeight(pack_ternary(w_codes), w_scale, 10))
    want = (x_codes.float() * x_scale) @ (w_codes.float() * w_scale).t()
    torch.testing.assert_close(y, want)


def test_matmul_rejects_wrong_dtypes_and_shapes() -> None:
    packed = pack_ternary(torch.zeros(4, 8, dtype=torch.int8))
    with pytest.raises(ValueError, match="expected int8 activations"):
        bitlinear_matmul(torch.zeros(2, 8), torch.ones(2, 1), PackedTernaryWeight(packed, torch.tensor(1.0), 8))
    with pytest.raises(ValueError, match="shape mismatch"):
        bitlinear_matmul(
            torch.zeros(2, 9, dtype=torch.int8), torch.ones(2, 1), PackedTernaryWeight(packed, torch.tensor(1.0), 9)
        )
