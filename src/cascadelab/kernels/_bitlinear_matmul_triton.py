# mypy: disable-error-code="no-untyped-def"
# ruff: noqa: N803  (Triton convention: upper-case sizes and constexpr block shapes)
"""Triton kernel of :mod:`cascadelab.kernels.bitlinear_matmul`: int8 activations x packed ternary weights.

Weights arrive packed four to a byte along K with a stride of K4 = ceil(K/4): byte ``[i, n]`` holds
``W[n, j*K4 + i] + 1`` in bits ``2j..2j+1`` for j = 0..3. A program loads one packed tile, decodes
the four 2-bit planes with shifts, and accumulates four int8 ``tl.dot`` products in int32; the
per-token activation scale and the per-tensor weight scale are applied once at the end. Imported only
through the guarded import in ``bitlinear_matmul.py``.
"""

import triton
import triton.language as tl


@triton.jit
def _bitlinear_matmul_kernel(
    x_ptr,
    xs_ptr,
    w_ptr,
    ws_ptr,
    y_ptr,
    M,
    N,
    K,
    K4,
    stride_xm,
    stride_xk,
    stride_wk,
    stride_wn,
    stride_ym,
    stride_yn,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
):
    """y[m, n] = xs[m] * ws * sum_k x[m, k] * W[n, k] with x int8 (M, K) and W packed (K4, N) uint8."""
    pid = tl.program_id(0)
    grid_m = tl.cdiv(M, BLOCK_M)
    grid_n = tl.cdiv(N, BLOCK_N)
    # grouped ordering: neighbouring programs share weight tiles in L2
    group = pid // (GROUP_M * grid_n)
    first_m = group * GROUP_M
    size_m = min(grid_m - first_m, GROUP_M)
    pid_m = first_m + (pid % (GROUP_M * grid_n)) % size_m
    pid_n = (pid % (GROUP_M * grid_n)) // size_m
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_i = tl.arange(0, BLOCK_K)
    m_mask = offs_m < M
    n_mask = offs_n < N
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32)
    for i0 in range(0, K4, BLOCK_K):
        rows = i0 + offs_i
        w_mask = (rows < K4)[:, None] & n_mask[None, :]
        # 0b01010101 decodes to four zeros, so masked bytes contribute nothing
        w_offs = rows[:, None] * stride_wk + offs_n[None, :] * stride_wn
        packed = tl.load(w_ptr + w_offs, mask=w_mask, other=85)
        for j in tl.static_range(4):
            w_j = ((packed >> (2 * j)) & 3).to(tl.int8) - 1
            cols = j * K4 + rows
            x_mask = m_mask[:, None] & ((rows < K4) & (cols < K))[None, :]
            x_offs = offs_m[:, None] * stride_xm + cols[None, :] * stride_xk
            x_j = tl.load(x_ptr + x_offs, mask=x_mask, other=0)
            acc += tl.dot(x_j, w_j, out_dtype=tl.int32)
    xs = tl.load(xs_ptr + offs_m, mask=m_mask, other=0.0)
    ws = tl.load(ws_ptr)
    y = acc.to(tl.float32) * xs[:, None] * ws
    y_mask = m_mask[:, None] & n_mask[None, :]
    y_offs = offs_m[:, None] * stride_ym + offs_n[None, :] * stride_yn
    tl.store(y_ptr + y_offs, y.to(y_ptr.dtype.element_ty), mask=y_mask)
