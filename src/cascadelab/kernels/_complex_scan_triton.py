# mypy: disable-error-code="no-untyped-def"
# ruff: noqa: N803  (Triton convention: upper-case sizes and constexpr block shapes)
"""Triton kernels of the chunked decay scan at the core of :mod:`cascadelab.kernels.complex_scan`.

All three kernels compute, for one (batch, head) per program, the scalar-decay linear recurrence

    y_t = sum_{s <= t} exp(G_t - G_s) (q_t . k_s) v_s,      G_t = sum_{r <= t} log_decay_r

chunk by chunk: inside a chunk of ``CHUNK`` steps the quadratic form above (masked, decayed ``q k^T``)
is two ``tl.dot`` calls; across chunks a state ``S`` (``N x P``) carries the past, kept in registers
while the program walks its chunks in order (forward, ``dq``) or in reverse (``dk``, ``dv``). The
gradient with respect to ``log_decay`` is not computed here: it follows from
``dG_t = q_t . dq_t - k_t . dk_t`` (see the launcher).
Imported only through the guarded import in ``complex_scan.py``.
"""

import triton
import triton.language as tl


@triton.jit
def _chunk_tiles(
    q_ptr, k_ptr, v_ptr, a_ptr, c0, T,
    stride_qt, stride_vt, stride_at,
    offs_t, offs_n, offs_p, N, P,
):
    """Load one chunk of q, k (CHUNK x N), v (CHUNK x P) and its in-chunk cumulative log decay."""
    t = c0 + offs_t
    t_mask = t < T
    qk_mask = t_mask[:, None] & (offs_n[None, :] < N)
    v_mask = t_mask[:, None] & (offs_p[None, :] < P)
    q = tl.load(q_ptr + t[:, None] * stride_qt + offs_n[None, :], mask=qk_mask, other=0.0)
    k = tl.load(k_ptr + t[:, None] * stride_qt + offs_n[None, :], mask=qk_mask, other=0.0)
    v = tl.load(v_ptr + t[:, None] * stride_vt + offs_p[None, :], mask=v_mask, other=0.0)
    a = tl.load(a_ptr + t * stride_at, mask=t_mask, other=0.0).to(tl.float32)
    g = tl.cumsum(a, axis=0)
    return q, k, v, g, t, v_mask


@triton.jit
def _complex_scan_fwd_kernel(
    q_ptr, k_ptr, v_ptr, a_ptr, y_ptr,
    T, H, N, P,
    stride_qb, stride_qh, stride_qt,
    stride_vb, stride_vh, stride_vt,
    stride_ab, stride_ah, stride_at,
    CHUNK: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_P: tl.constexpr, PRECISION: tl.constexpr,
):
    """Forward: one program per (batch*head, P-block); y has v's strides."""
    pid_bh = tl.program_id(0)
    pid_p = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    q_ptr += b * stride_qb + h * stride_qh
    k_ptr += b * stride_qb + h * stride_qh
    v_ptr += b * stride_vb + h * stride_vh
    y_ptr += b * stride_vb + h * stride_vh
    a_ptr += b * stride_ab + h * stride_ah
    offs_t = tl.arange(0, CHUNK)
    offs_n = tl.arange(0, BLOCK_N)
    offs_p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    causal = offs_t[:, None] >= offs_t[None, :]
    state = tl.zeros((BLOCK_N, BLOCK_P), dtype=tl.float32)
    for c0 in range(0, T, CHUNK):
        q, k, v, g, t, v_mask = _chunk_tiles(
            q_ptr, k_ptr, v_ptr, a_ptr, c0, T, stride_qt, stride_vt, stride_at,
            offs_t, offs_n, offs_p, N, P,
        )
        g_last = tl.sum(tl.where(offs_t == CHUNK - 1, g, 0.0), axis=0)
        decay = tl.exp(tl.where(causal, g[:, None] - g[None, :], float("-inf")))
        scores = tl.dot(q, tl.trans(k), input_precision=PRECISION) * decay
        y = tl.dot(scores.to(v.dtype), v, input_precision=PRECISION)
        q_dec = (q * tl.exp(g)[:, None]).to(q.dtype)
        y += tl.dot(q_dec, state.to(q.dtype), input_precision=PRECISION)
        tl.store(y_ptr + t[:, None] * stride_vt + offs_p[None, :], y.to(y_ptr.dtype.element_ty), mask=v_mask)
        k_dec = (k * tl.exp(g_last - g)[:, None]).to(k.dtype)
        state = state * tl.exp(g_last) + tl.dot(tl.trans(k_dec), v, input_precision=PRECISION)


@triton.jit
def _complex_scan_bwd_dq_kernel(
    k_ptr, v_ptr, a_ptr, do_ptr, dq_ptr,
    T, H, N, P,
    stride_qb, stride_qh, stride_qt,
    stride_vb, stride_vh, stride_vt,
    stride_ab, stride_ah, stride_at,
    CHUNK: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_P: tl.constexpr, PRECISION: tl.constexpr,
):
    """Backward, forward sweep: dq_t = sum_{s<=t} e^{G_t-G_s} (do_t . v_s) k_s; dq has q's strides."""
    pid_bh = tl.program_id(0)
    b = pid_bh // H
    h = pid_bh % H
    k_ptr += b * stride_qb + h * stride_qh
    dq_ptr += b * stride_qb + h * stride_qh
    v_ptr += b * stride_vb + h * stride_vh
    do_ptr += b * stride_vb + h * stride_vh
    a_ptr += b * stride_ab + h * stride_ah
    offs_t = tl.arange(0, CHUNK)
    offs_n = tl.arange(0, BLOCK_N)
    offs_p = tl.arange(0, BLOCK_P)
    causal = offs_t[:, None] >= offs_t[None, :]
    state = tl.zeros((BLOCK_N, BLOCK_P), dtype=tl.float32)
    for c0 in range(0, T, CHUNK):
        # q is not needed here: the k pointer stands in for it in the shared loader
        _, k, v, g, t, v_mask = _chunk_tiles(
            k_ptr, k_ptr, v_ptr, a_ptr, c0, T, stride_qt, stride_vt, stride_at,
            offs_t, offs_n, offs_p, N, P,
        )
        do = tl.load(do_ptr + t[:, None] * stride_vt + offs_p[None, :], mask=v_mask, other=0.0)
        g_last = tl.sum(tl.where(offs_t == CHUNK - 1, g, 0.0), axis=0)
        decay = tl.exp(tl.where(causal, g[:, None] - g[None, :], float("-inf")))
        dscores = tl.dot(do, tl.trans(v), input_precision=PRECISION) * decay
        dq = tl.dot(dscores.to(k.dtype), k, input_precision=PRECISION)
        dq += tl.dot(do, tl.trans(state.to(do.dtype)), input_precision=PRECISION) * tl.exp(g)[:, None]
        qk_mask = (t < T)[:, None] & (offs_n[None, :] < N)
        tl.store(dq_ptr + t[:, None] * stride_qt + offs_n[None, :], dq, mask=qk_mask)
        k_dec = (k * tl.exp(g_last - g)[:, None]).to(k.dtype)
        state = state * tl.exp(g_last) + tl.dot(tl.trans(k_dec), v, input_precision=PRECISION)


@triton.jit
def _complex_scan_bwd_dkv_kernel(
    q_ptr, k_ptr, v_ptr, a_ptr, do_ptr, dk_ptr, dv_ptr,
    T, H, N, P,
    stride_qb, stride_qh, stride_qt,
    stride_vb, stride_vh, stride_vt,
    stride_ab, stride_ah, stride_at,
    CHUNK: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_P: tl.constexpr, PRECISION: tl.constexpr,
):
    """Backward, reverse sweep: dk and dv, carrying dS = sum over later steps of e^{G_t-G_end} q_t do_t^T."""
    pid_bh = tl.program_id(0)
    b = pid_bh // H
    h = pid_bh % H
    q_ptr += b * stride_qb + h * stride_qh
    k_ptr += b * stride_qb + h * stride_qh
    dk_ptr += b * stride_qb + h * stride_qh
    v_ptr += b * stride_vb + h * stride_vh
    do_ptr += b * stride_vb + h * stride_vh
    dv_ptr += b * stride_vb + h * stride_vh
    a_ptr += b * stride_ab + h * stride_ah
    offs_t = tl.arange(0, CHUNK)
    offs_n = tl.arange(0, BLOCK_N)
    offs_p = tl.arange(0, BLOCK_P)
    causal = offs_t[:, None] >= offs_t[None, :]
    dstate = tl.zeros((BLOCK_N, BLOCK_P), dtype=tl.float32)
    n_chunks = tl.cdiv(T, CHUNK)
    for i in range(0, n_chunks):
        c0 = (n_chunks - 1 - i) * CHUNK
        q, k, v, g, t, v_mask = _chunk_tiles(
            q_ptr, k_ptr, v_ptr, a_ptr, c0, T, stride_qt, stride_vt, stride_at,
            offs_t, offs_n, offs_p, N, P,
        )
        do = tl.load(do_ptr + t[:, None] * stride_vt + offs_p[None, :], mask=v_mask, other=0.0)
        g_last = tl.sum(tl.where(offs_t == CHUNK - 1, g, 0.0), axis=0)
        decay = tl.exp(tl.where(causal, g[:, None] - g[None, :], float("-inf")))
        scores = tl.dot(q, tl.trans(k), input_precision=PRECISION) * decay
        dscores = tl.dot(do, tl.trans(v), input_precision=PRECISION) * decay
        tail = tl.exp(g_last - g)[:, None]
        dv = tl.dot(tl.trans(scores.to(do.dtype)), do, input_precision=PRECISION)
        dv += tl.dot(k, dstate.to(k.dtype), input_precision=PRECISION) * tail
        dk = tl.dot(tl.trans(dscores.to(q.dtype)), q, input_precision=PRECISION)
        dk += tl.dot(v, tl.trans(dstate.to(v.dtype)), input_precision=PRECISION) * tail
        qk_mask = (t < T)[:, None] & (offs_n[None, :] < N)
        tl.store(dk_ptr + t[:, None] * stride_qt + offs_n[None, :], dk, mask=qk_mask)
        tl.store(dv_ptr + t[:, None] * stride_vt + offs_p[None, :], dv, mask=v_mask)
        q_dec = (q * tl.exp(g)[:, None]).to(q.dtype)
        dstate = dstate * tl.exp(g_last) + tl.dot(tl.trans(q_dec), do, input_precision=PRECISION)
