"""Guarded Triton import and the backend choice shared by every kernel dispatcher."""

from __future__ import annotations

import os
from typing import Literal

import torch

try:  # a failed import leaves the kernels unavailable, never the library
    import triton
except ImportError:  # pragma: no cover - exercised only where triton is absent
    triton = None

Backend = Literal["auto", "triton", "ref"]

TRITON_AVAILABLE: bool = triton is not None


def interpreter_active() -> bool:
    """Whether Triton runs kernels on CPU tensors through its interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def select_backend(tensor: torch.Tensor, backend: Backend = "auto") -> Literal["triton", "ref"]:
    """Resolve ``backend`` for ``tensor``: Triton on CUDA when available, the PyTorch reference elsewhere."""
    if backend not in ("auto", "triton", "ref"):
        raise ValueError(f"backend must be 'auto', 'triton' or 'ref', got {backend!r}")
    if backend == "ref":
        return "ref"
    usable = TRITON_AVAILABLE and (tensor.is_cuda or interpreter_active())
    if backend == "triton":
        if not usable:
            raise RuntimeError("the Triton backend needs triton and a CUDA tensor (or TRITON_INTERPRET=1)")
        return "triton"
    return "triton" if TRITON_AVAILABLE and tensor.is_cuda else "ref"


def next_power_of_2(n: int) -> int:
    """Smallest power of two >= n (and >= 1)."""
    return 1 if n <= 1 else 1 << (n - 1).bit_length()
