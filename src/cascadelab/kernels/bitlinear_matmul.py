"""BitNet b1.58 matmul, ternary packed weights x int8 activations: Triton kernel, reference, dispatcher.

BitNet b1.58 (Ma et al., 2024, "The Era of 1-bit LLMs") quantises weights to {-1, 0, +1} with one
absmean scale per tensor, ``W_t = clamp(round(W / mean|W|), -1, 1)``, and activations to int8 with one
absmax scale per token, ``x_q = clamp(round(127 x / max|x|), -128, 127)``. The product is then

    y = (x_q @ W_tᵀ) · (max|x| / 127) · mean|W|

computed in integers. Weights are stored packed, four 2-bit codes per byte (see
``_bitlinear_matmul_triton.py`` for the layout), i.e. 16x smaller than fp32.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from cascadelab.kernels._triton import Backend, select_backend

try:
    from cascadelab.kernels._bitlinear_matmul_triton import _bitlinear_matmul_kernel
except ImportError:  # pragma: no cover - no triton: the reference path serves every device
    _bitlinear_matmul_kernel = None

QUANT_EPS = 1e-5


class PackedTernaryWeight(NamedTuple):
    """A ternary weight ready for the matmul: packed codes (ceil(K/4), N) uint8, scale mean|W|, and K."""

    packed: torch.Tensor
    scale: torch.Tensor
    in_features: int


def quantize_weight_ternary(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Absmean ternary quantisation: int8 codes in {-1, 0, 1} and the float32 per-tensor scale mean|W|."""
    scale = weight.detach().float().abs().mean().clamp(min=QUANT_EPS)
    codes = (weight.detach().float() / scale).round().clamp(-1, 1).to(torch.int8)
    return codes, scale


def quantize_activation_int8(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token absmax int8 quantisation (last dim): int8 codes and float32 scales max|x|/127, (..., 1)."""
    scale = x.detach().float().abs().amax(dim=-1, keepdim=True).clamp(min=QUANT_EPS) / 127.0
    codes = (x.detach().float() / scale).round().clamp(-128, 127).to(torch.int8)
    return codes, scale


def pack_ternary(codes: torch.Tensor) -> torch.Tensor:
    """Pack ternary codes (N, K) to uint8 (ceil(K/4), N): byte [i, n] holds codes[n, j*K4+i] + 1 at bit 2j."""
    if codes.ndim != 2:
        raise ValueError(f"pack_ternary expects a 2-D (out, in) tensor, got shape {tuple(codes.shape)}")
    n_out, k = codes.shape
    k4 = -(-k // 4)
    shifted = F.pad(codes.to(torch.int16) + 1, (0, 4 * k4 - k), value=1).view(n_out, 4, k4)
    packed = shifted[:, 0] | (shifted[:, 1] << 2) | (shifted[:, 2] << 4) | (shifted[:, 3] << 6)
    return packed.to(torch.uint8).t().contiguous()


def unpack_ternary(packed: torch.Tensor, k: int) -> torch.Tensor:
    """Inverse of :func:`pack_ternary`: uint8 (K4, N) -> int8 codes (N, k)."""
    planes = [((packed >> (2 * j)) & 3).to(torch.int8) - 1 for j in range(4)]  # each (K4, N)
    return torch.cat(planes, dim=0)[:k].t()


def bitlinear_matmul_ref(
    x_codes: torch.Tensor, x_scale: torch.Tensor, weight: PackedTernaryWeight, out_dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Reference: unpack the ternary weights, multiply in float32, apply both scales; x (M, K) -> (M, N)."""
    codes = unpack_ternary(weight.packed, weight.in_features).float()
    y = x_codes.float() @ codes.t()
    return (y * x_scale.float() * weight.scale.float()).to(out_dtype)


def _blocks(m: int, n: int) -> dict[str, int]:
    """Launch parameters by problem size: small M (decoding) gets short tiles, large M square ones."""
    block_m = 16 if m <= 16 else 32 if m <= 32 else 64 if m <= 64 else 128
    block_n = 64 if n <= 64 else 128
    num_warps = 4 if block_m * block_n <= 64 * 64 else 8
    return {"BLOCK_M": block_m, "BLOCK_N": block_n, "BLOCK_K": 32, "num_warps": num_warps, "num_stages": 3}


def bitlinear_matmul_triton(
    x_codes: torch.Tensor, x_scale: torch.Tensor, weight: PackedTernaryWeight, out_dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Triton launcher, same contract as :func:`bitlinear_matmul_ref`."""
    if _bitlinear_matmul_kernel is None:
        raise RuntimeError("triton is not installed: use bitlinear_matmul_ref")
    m = x_codes.shape[0]
    w_packed, k = weight.packed, weight.in_features
    k4, n = w_packed.shape
    xs = x_scale.reshape(m).float().contiguous()
    ws = weight.scale.reshape(1).float()
    y = torch.empty(m, n, dtype=out_dtype, device=x_codes.device)
    launch = _blocks(m, n)
    grid = (-(-m // launch["BLOCK_M"]) * -(-n // launch["BLOCK_N"]),)
    _bitlinear_matmul_kernel[grid](
        x_codes,
        xs,
        w_packed,
        ws,
        y,
        m,
        n,
        k,
        k4,
        x_codes.stride(0),
        x_codes.stride(1),
        w_packed.stride(0),
        w_packed.stride(1),
        y.stride(0),
        y.stride(1),
        GROUP_M=8,
        **launch,
    )
    return y


def bitlinear_matmul(
    x_codes: torch.Tensor,
    x_scale: torch.Tensor,
    weight: PackedTernaryWeight,
    out_dtype: torch.dtype = torch.float32,
    backend: Backend = "auto",
) -> torch.Tensor:
    """Dispatch the ternary x int8 matmul: Triton on CUDA, the reference elsewhere (or per ``backend``)."""
    packed, k = weight.packed, weight.in_features
    if x_codes.dtype != torch.int8 or packed.dtype != torch.uint8:
        raise ValueError(f"expected int8 activations and uint8 packed weights, got {x_codes.dtype} and {packed.dtype}")
    if x_codes.ndim != 2 or x_codes.shape[1] != k or packed.shape[0] != -(-k // 4):
        raise ValueError(f"shape mismatch: x {tuple(x_codes.shape)}, packed {tuple(packed.shape)}, in_features {k}")
    if select_backend(x_codes, backend) == "triton":
        return bitlinear_matmul_triton(x_codes, x_scale, weight, out_dtype)
    return bitlinear_matmul_ref(x_codes, x_scale, weight, out_dtype)
