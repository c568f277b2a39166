# mypy: disable-error-code="no-untyped-def"
# ruff: noqa: N803  (Triton convention: upper-case constexpr block size)
"""Triton kernel of :mod:`cascadelab.kernels.gnprox_update`: the fused element-wise GNProx step.

One program updates BLOCK consecutive elements of the flattened parameter, its gradient, momentum and
curvature estimate in one pass (one read and one write of each state tensor). Imported only through
the guarded import in ``gnprox_update.py``.
"""

import triton
import triton.language as tl


@triton.jit
def _gnprox_update_kernel(
    p_ptr,
    g_ptr,
    m_ptr,
    h_ptr,
    n,
    lr,
    beta1,
    beta2,
    rho,
    eps,
    weight_decay,
    UPDATE_H: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """m ← β₁m + (1−β₁)g; h ← β₂h + (1−β₂)g² (if UPDATE_H); p ← p(1−ηλ) − η·clip(m / max(ρh, ε), ±1)."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    p = tl.load(p_ptr + offs, mask=mask, other=0.0)
    g = tl.load(g_ptr + offs, mask=mask, other=0.0)
    m = tl.load(m_ptr + offs, mask=mask, other=0.0)
    h = tl.load(h_ptr + offs, mask=mask, other=0.0)
    m = beta1 * m + (1.0 - beta1) * g
    if UPDATE_H:
        h = beta2 * h + (1.0 - beta2) * g * g
    ratio = m / tl.maximum(rho * h, eps)
    step = tl.minimum(tl.maximum(ratio, -1.0), 1.0)
    p = p * (1.0 - lr * weight_decay) - lr * step
    tl.store(m_ptr + offs, m, mask=mask)
    if UPDATE_H:
        tl.store(h_ptr + offs, h, mask=mask)
    tl.store(p_ptr + offs, p, mask=mask)
