"""Triton kernels beside their PyTorch references, each behind one dispatch function.

- :func:`complex_scan` — Mamba-3 complex (rotary) selective scan, chunked, forward and backward.
- :func:`bitlinear_matmul` — BitNet b1.58 ternary packed weights x int8 activations.
- :func:`gnprox_update` — the fused element-wise GNProx optimizer step.

Dispatchers run Triton on CUDA when it imports and the PyTorch reference elsewhere.
"""

from cascadelab.kernels._triton import TRITON_AVAILABLE, select_backend
from cascadelab.kernels.bitlinear_matmul import (
    PackedTernaryWeight,
    bitlinear_matmul,
    bitlinear_matmul_ref,
    bitlinear_matmul_triton,
    pack_ternary,
    quantize_activation_int8,
    quantize_weight_ternary,
    unpack_ternary,
)
from cascadelab.kernels.complex_scan import (
    ScanInputs,
    ScanState,
    chunk_scan_ref,
    chunk_scan_triton,
    complex_scan,
    complex_scan_naive,
    complex_scan_ref,
    complex_scan_triton,
    rotate_pairs,
)
from cascadelab.kernels.gnprox_update import GNProxStep, gnprox_update, gnprox_update_ref, gnprox_update_triton

__all__ = [
    "TRITON_AVAILABLE",
    "GNProxStep",
    "PackedTernaryWeight",
    "ScanInputs",
    "ScanState",
    "bitlinear_matmul",
    "bitlinear_matmul_ref",
    "bitlinear_matmul_triton",
    "chunk_scan_ref",
    "chunk_scan_triton",
    "complex_scan",
    "complex_scan_naive",
    "complex_scan_ref",
    "complex_scan_triton",
    "gnprox_update",
    "gnprox_update_ref",
    "gnprox_update_triton",
    "pack_ternary",
    "quantize_activation_int8",
    "quantize_weight_ternary",
    "rotate_pairs",
    "select_backend",
    "unpack_ternary",
]
