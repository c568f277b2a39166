"""BitLinear (BitNet b1.58): a drop-in ``nn.Linear`` with ternary weights and int8 activations.

Training keeps latent full-precision weights and fake-quantises both operands in the forward pass;
the straight-through estimator (``x + (q(x) - x).detach()``) passes gradients through the rounding
unchanged. Inference (eval mode, no autograd) quantises the weights once into packed 2-bit codes
(the *quantisation cache*) and runs the integer matmul of :mod:`cascadelab.kernels.bitlinear_matmul`
(Triton on CUDA, the PyTorch reference elsewhere). The cache is rebuilt whenever the weight tensor
changes (its version counter or storage moves) and dropped when the module goes back to training.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from cascadelab.kernels import (
    PackedTernaryWeight,
    bitlinear_matmul,
    pack_ternary,
    quantize_activation_int8,
    quantize_weight_ternary,
    select_backend,
)
from cascadelab.models.sigma.features import FeatureCalls


def ternary_weight_ste(weight: torch.Tensor) -> torch.Tensor:
    """Absmean ternary fake-quantisation of ``weight`` (values {-s, 0, s}), straight-through gradient."""
    codes, scale = quantize_weight_ternary(weight)
    return weight + (codes.to(weight.dtype) * scale.to(weight.dtype) - weight).detach()


def int8_activation_ste(x: torch.Tensor) -> torch.Tensor:
    """Per-token absmax int8 fake-quantisation of ``x`` with a straight-through gradient."""
    codes, scale = quantize_activation_int8(x)
    return x + (codes.to(x.dtype) * scale.to(x.dtype) - x).detach()


class _QuantCache(NamedTuple):
    packed: torch.Tensor
    scale: torch.Tensor
    key: tuple[int, int, str]


class BitLinear(nn.Linear):
    """Linear layer with BitNet b1.58 ternary weights and per-token int8 activations."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = False,
        features: FeatureCalls | None = None,
        use_triton: bool = True,
    ) -> None:
        super().__init__(in_features, out_features, bias=bias)
        self.features = features
        self.use_triton = use_triton
        self._cache: _QuantCache | None = None
        self.cache_builds = 0  # how many times the weights were quantised for inference

    def train(self, mode: bool = True) -> BitLinear:
        """Switch mode; entering training drops the inference quantisation cache."""
        if mode:
            self._cache = None
        return super().train(mode)

    def _cache_key(self) -> tuple[int, int, str]:
        return (self.weight._version, self.weight.data_ptr(), str(self.weight.device))

    def quantized_weight(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Packed ternary codes (ceil(in/4), out) and scale, built once, reused until the weight changes."""
        key = self._cache_key()
        if self._cache is None or self._cache.key != key:
            codes, scale = quantize_weight_ternary(self.weight)
            self._cache = _QuantCache(pack_ternary(codes), scale, key)
            self.cache_builds += 1
        return self._cache.packed, self._cache.scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Fake-quantised STE matmul when training or tracking gradients, cached integer matmul otherwise."""
        if self.features is not None:
            self.features.hit("bitlinear")
        if self.training or torch.is_grad_enabled():
            return F.linear(int8_activation_ste(x), ternary_weight_ste(self.weight), self.bias)
        packed, scale = self.quantized_weight()
        flat = x.reshape(-1, self.in_features)
        codes, x_scale = quantize_activation_int8(flat)
        backend = select_backend(codes) if self.use_triton else "ref"
        if backend == "triton" and self.features is not None:
            self.features.hit("triton")
        weight = PackedTernaryWeight(packed, scale, self.in_features)
        y = bitlinear_matmul(codes, x_scale, weight, out_dtype=x.dtype, backend=backend)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*x.shape[:-1], self.out_features)


def make_linear(
    family: str,
    in_features: int,
    out_features: int,
    bitlinear_families: list[str],
    features: FeatureCalls | None = None,
    bias: bool = False,
    use_triton: bool = True,
) -> nn.Linear:
    """An ``nn.Linear``, or a :class:`BitLinear` when ``family`` is listed in ``bitlinear_families``."""
    if family in bitlinear_families:
        return BitLinear(in_features, out_features, bias=bias, features=features, use_triton=use_triton)
    return nn.Linear(in_features, out_features, bias=bias)
