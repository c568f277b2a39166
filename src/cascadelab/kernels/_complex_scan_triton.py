# mypy: disable-error-code="no-untyped-def"
# ruff: noqa: N803  (Triton convention: upper-case sizes and constexpr block shapes)
"""Triton kernels of the chunked decay scan at the core of :mod:`cascadelab.kernels.complex_scan`.

They compute, per (batch, head), the scalar-decay linear recurrence

    y_t = sum_{s <= t} exp(G_t - G_s) (q_t . k_s) v_s,      G_t = sum_{r <= t} log_decay_r

in the three SSD passes of Mamba-2, each parallel over chunks except the cheap middle one:

1. ``_complex_scan_chunk_state_kernel``: each chunk's own contribution to the state carried past
   its end, ``sum_s exp(g_last - g_s) k_s v_sᵀ`` (N x P); run on (q, dy) with weights ``exp(g_t)`` it
   gives the per-chunk state gradients for the backward pass.
2. ``_complex_scan_state_pass_kernel``: walks the chunks (forward, or in reverse for gradients)
   turning per-chunk states into the state entering each chunk, ``S <- exp(g_last) S + local``.
3. ``_complex_scan_chunk_fwd_kernel``: per chunk, the masked decayed ``q kᵀ`` times v plus the
   entering state read out by ``exp(g_t) q_t``; ``..._bwd_dq_kernel`` / ``..._bwd_dkv_kernel`` are its
   gradients; they also emit ``q_t . dq_t`` and ``k_t . dk_t``, whose difference is the gradient with
   respect to the cumulative log decay (the launcher turns it into d log_decay by a reverse cumsum).

``g`` is the cumulative log decay inside a chunk, recomputed in every kernel with ``tl.cumsum``.
Imported only through the guarded import in ``complex_scan.py``.
"""

import triton
import triton.language as tl


@triton.jit
def _load_rows(ptr, t, T, stride_t, offs, D):
    """Load a (CHUNK, BLOCK) tile of rows ``t`` with the feature dimension contiguous, zero-padded."""
    mask = (t < T)[:, None] & (offs[None, :] < D)
    return tl.load(ptr + t[:, None] * stride_t + offs[None, :], mask=mask, other=0.0)


@triton.jit
def _chunk_log_decay(a_ptr, t, T, stride_at, offs_t, CHUNK: tl.constexpr):
    """In-chunk cumulative log decay g (CHUNK,) and its last value (padding steps add 0)."""
    a = tl.load(a_ptr + t * stride_at, mask=t < T, other=0.0).to(tl.float32)
    g = tl.cumsum(a, axis=0)
    g_last = tl.sum(tl.where(offs_t == CHUNK - 1, g, 0.0), axis=0)
    return g, g_last


@triton.jit
def _complex_scan_chunk_state_kernel(
    x_ptr,
    y_ptr,
    a_ptr,
    s_ptr,
    glast_ptr,
    T,
    H,
    N,
    P,
    n_chunks,
    stride_xb,
    stride_xh,
    stride_xt,
    stride_yb,
    stride_yh,
    stride_yt,
    stride_ab,
    stride_ah,
    stride_at,
    TO_END: tl.constexpr,
    CHUNK: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_P: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """states[b,h,c] = sum_s w_s x_s y_sᵀ with w = exp(g_last - g) (TO_END) or exp(g); grid (chunks, B*H)."""
    pid_c = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    offs_t = tl.arange(0, CHUNK)
    offs_n = tl.arange(0, BLOCK_N)
    offs_p = tl.arange(0, BLOCK_P)
    t = pid_c * CHUNK + offs_t
    x = _load_rows(x_ptr + b * stride_xb + h * stride_xh, t, T, stride_xt, offs_n, N)
    y = _load_rows(y_ptr + b * stride_yb + h * stride_yh, t, T, stride_yt, offs_p, P)
    g, g_last = _chunk_log_decay(a_ptr + b * stride_ab + h * stride_ah, t, T, stride_at, offs_t, CHUNK)
    w = tl.exp(g_last - g) if TO_END else tl.exp(g)
    xw = (x * w[:, None]).to(x.dtype)
    state = tl.dot(tl.trans(xw), y, input_precision=PRECISION)
    base = pid_bh * n_chunks + pid_c
    mask = (offs_n[:, None] < N) & (offs_p[None, :] < P)
    tl.store(s_ptr + base * N * P + offs_n[:, None] * P + offs_p[None, :], state, mask=mask)
    tl.store(glast_ptr + base, g_last)


@triton.jit
def _complex_scan_state_pass_kernel(s_ptr, glast_ptr, n_chunks, NP, REVERSE: tl.constexpr, BLOCK: tl.constexpr):
    """In place per (b,h): states[c] <- state entering chunk c (REVERSE: gradient of the state leaving it).

    Grid (B*H, NP/BLOCK).
    """
    pid_bh = tl.program_id(0)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < NP
    running = tl.zeros((BLOCK,), dtype=tl.float32)
    for i in range(0, n_chunks):
        c = n_chunks - 1 - i if REVERSE else i
        ptr = s_ptr + (pid_bh * n_chunks + c) * NP + offs
        local = tl.load(ptr, mask=mask, other=0.0)
        tl.store(ptr, running, mask=mask)
        running = running * tl.exp(tl.load(glast_ptr + pid_bh * n_chunks + c)) + local


@triton.jit
def _complex_scan_chunk_fwd_kernel(
    q_ptr,
    k_ptr,
    v_ptr,
    a_ptr,
    s_ptr,
    y_ptr,
    T,
    H,
    N,
    P,
    n_chunks,
    stride_qb,
    stride_qh,
    stride_qt,
    stride_vb,
    stride_vh,
    stride_vt,
    stride_ab,
    stride_ah,
    stride_at,
    CHUNK: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_P: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """y = (q kᵀ ⊙ decay) v + exp(g) q S_in for one chunk and P-block; grid (chunks, B*H, P/BLOCK_P)."""
    pid_c = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    offs_t = tl.arange(0, CHUNK)
    offs_n = tl.arange(0, BLOCK_N)
    offs_p = tl.program_id(2) * BLOCK_P + tl.arange(0, BLOCK_P)
    t = pid_c * CHUNK + offs_t
    q = _load_rows(q_ptr + b * stride_qb + h * stride_qh, t, T, stride_qt, offs_n, N)
    k = _load_rows(k_ptr + b * stride_qb + h * stride_qh, t, T, stride_qt, offs_n, N)
    v = _load_rows(v_ptr + b * stride_vb + h * stride_vh, t, T, stride_vt, offs_p, P)
    g, _ = _chunk_log_decay(a_ptr + b * stride_ab + h * stride_ah, t, T, stride_at, offs_t, CHUNK)
    s_mask = (offs_n[:, None] < N) & (offs_p[None, :] < P)
    s_offs = (pid_bh * n_chunks + pid_c) * N * P + offs_n[:, None] * P + offs_p[None, :]
    s_in = tl.load(s_ptr + s_offs, mask=s_mask, other=0.0)
    causal = offs_t[:, None] >= offs_t[None, :]
    decay = tl.exp(tl.where(causal, g[:, None] - g[None, :], float("-inf")))
    scores = tl.dot(q, tl.trans(k), input_precision=PRECISION) * decay
    y = tl.dot(scores.to(v.dtype), v, input_precision=PRECISION)
    y += tl.dot(q, s_in.to(q.dtype), input_precision=PRECISION) * tl.exp(g)[:, None]
    y_mask = (t < T)[:, None] & (offs_p[None, :] < P)
    y_ptrs = y_ptr + b * stride_vb + h * stride_vh + t[:, None] * stride_vt + offs_p[None, :]
    tl.store(y_ptrs, y.to(y_ptr.dtype.element_ty), mask=y_mask)


@triton.jit
def _complex_scan_chunk_bwd_dq_kernel(
    q_ptr,
    k_ptr,
    v_ptr,
    a_ptr,
    do_ptr,
    s_ptr,
    dq_ptr,
    dgq_ptr,
    T,
    H,
    N,
    P,
    n_chunks,
    stride_qb,
    stride_qh,
    stride_qt,
    stride_vb,
    stride_vh,
    stride_vt,
    stride_ab,
    stride_ah,
    stride_at,
    CHUNK: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_P: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """dq = (do vᵀ ⊙ decay) k + exp(g) do S_inᵀ and q·dq per step (float32); grid (chunks, B*H)."""
    pid_c = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    offs_t = tl.arange(0, CHUNK)
    offs_n = tl.arange(0, BLOCK_N)
    offs_p = tl.arange(0, BLOCK_P)
    t = pid_c * CHUNK + offs_t
    k = _load_rows(k_ptr + b * stride_qb + h * stride_qh, t, T, stride_qt, offs_n, N)
    v = _load_rows(v_ptr + b * stride_vb + h * stride_vh, t, T, stride_vt, offs_p, P)
    do = _load_rows(do_ptr + b * stride_vb + h * stride_vh, t, T, stride_vt, offs_p, P)
    g, _ = _chunk_log_decay(a_ptr + b * stride_ab + h * stride_ah, t, T, stride_at, offs_t, CHUNK)
    s_mask = (offs_n[:, None] < N) & (offs_p[None, :] < P)
    s_offs = (pid_bh * n_chunks + pid_c) * N * P + offs_n[:, None] * P + offs_p[None, :]
    s_in = tl.load(s_ptr + s_offs, mask=s_mask, other=0.0)
    causal = offs_t[:, None] >= offs_t[None, :]
    decay = tl.exp(tl.where(causal, g[:, None] - g[None, :], float("-inf")))
    dscores = tl.dot(do, tl.trans(v), input_precision=PRECISION) * decay
    dq = tl.dot(dscores.to(k.dtype), k, input_precision=PRECISION)
    dq += tl.dot(do, tl.trans(s_in.to(do.dtype)), input_precision=PRECISION) * tl.exp(g)[:, None]
    mask = (t < T)[:, None] & (offs_n[None, :] < N)
    dq_ptrs = dq_ptr + b * stride_qb + h * stride_qh + t[:, None] * stride_qt + offs_n[None, :]
    tl.store(dq_ptrs, dq, mask=mask)
    q = _load_rows(q_ptr + b * stride_qb + h * stride_qh, t, T, stride_qt, offs_n, N)
    tl.store(dgq_ptr + b * stride_ab + h * stride_ah + t * stride_at, tl.sum(q * dq, axis=1), mask=t < T)


@triton.jit
def _complex_scan_chunk_bwd_dkv_kernel(
    q_ptr,
    k_ptr,
    v_ptr,
    a_ptr,
    do_ptr,
    ds_ptr,
    dk_ptr,
    dv_ptr,
    dgk_ptr,
    T,
    H,
    N,
    P,
    n_chunks,
    stride_qb,
    stride_qh,
    stride_qt,
    stride_vb,
    stride_vh,
    stride_vt,
    stride_ab,
    stride_ah,
    stride_at,
    CHUNK: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_P: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """dk, dv of one chunk: in-chunk terms plus dS (gradient of the state leaving it); grid (chunks, B*H)."""
    pid_c = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    offs_t = tl.arange(0, CHUNK)
    offs_n = tl.arange(0, BLOCK_N)
    offs_p = tl.arange(0, BLOCK_P)
    t = pid_c * CHUNK + offs_t
    q = _load_rows(q_ptr + b * stride_qb + h * stride_qh, t, T, stride_qt, offs_n, N)
    k = _load_rows(k_ptr + b * stride_qb + h * stride_qh, t, T, stride_qt, offs_n, N)
    v = _load_rows(v_ptr + b * stride_vb + h * stride_vh, t, T, stride_vt, offs_p, P)
    do = _load_rows(do_ptr + b * stride_vb + h * stride_vh, t, T, stride_vt, offs_p, P)
    g, g_last = _chunk_log_decay(a_ptr + b * stride_ab + h * stride_ah, t, T, stride_at, offs_t, CHUNK)
    s_mask = (offs_n[:, None] < N) & (offs_p[None, :] < P)
    s_offs = (pid_bh * n_chunks + pid_c) * N * P + offs_n[:, None] * P + offs_p[None, :]
    ds = tl.load(ds_ptr + s_offs, mask=s_mask, other=0.0)
    causal = offs_t[:, None] >= offs_t[None, :]
    decay = tl.exp(tl.where(causal, g[:, None] - g[None, :], float("-inf")))
    tail = tl.exp(g_last - g)[:, None]
    scores = tl.dot(q, tl.trans(k), input_precision=PRECISION) * decay
    dv = tl.dot(tl.trans(scores.to(do.dtype)), do, input_precision=PRECISION)
    dv += tl.dot(k, ds.to(k.dtype), input_precision=PRECISION) * tail
    v_mask = (t < T)[:, None] & (offs_p[None, :] < P)
    dv_ptrs = dv_ptr + b * stride_vb + h * stride_vh + t[:, None] * stride_vt + offs_p[None, :]
    tl.store(dv_ptrs, dv, mask=v_mask)
    dscores = tl.dot(do, tl.trans(v), input_precision=PRECISION) * decay
    dk = tl.dot(tl.trans(dscores.to(q.dtype)), q, input_precision=PRECISION)
    dk += tl.dot(v, tl.trans(ds.to(v.dtype)), input_precision=PRECISION) * tail
    k_mask = (t < T)[:, None] & (offs_n[None, :] < N)
    dk_ptrs = dk_ptr + b * stride_qb + h * stride_qh + t[:, None] * stride_qt + offs_n[None, :]
    tl.store(dk_ptrs, dk, mask=k_mask)
    tl.store(dgk_ptr + b * stride_ab + h * stride_ah + t * stride_at, tl.sum(k * dk, axis=1), mask=t < T)
