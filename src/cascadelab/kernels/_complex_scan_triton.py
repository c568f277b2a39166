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
def _row_tile(t, T, stride_t, offs, D):
    """Offsets and mask of a (CHUNK, BLOCK) tile of rows ``t`` with the feature dimension contiguous."""
    return t[:, None] * stride_t + offs[None, :], (t < T)[:, None] & (offs[None, :] < D)


@triton.jit
def _load_rows(ptr, t, T, stride_t, offs, D):
    """Load a (CHUNK, BLOCK) tile of rows ``t`` with the feature dimension contiguous, zero-padded."""
    tile, mask = _row_tile(t, T, stride_t, offs, D)
    return tl.load(ptr + tile, mask=mask, other=0.0)


@triton.jit
def _store_rows(ptr, x, t, T, stride_t, offs, D):
    """Store a (CHUNK, BLOCK) tile ``x`` to rows ``t`` (the valid part), in the pointer's dtype."""
    tile, mask = _row_tile(t, T, stride_t, offs, D)
    tl.store(ptr + tile, x.to(ptr.dtype.element_ty), mask=mask)


@triton.jit
def _state_tile(chunk, offs_n, offs_p, N, P):
    """Offsets and mask of the (BLOCK_N, BLOCK_P) tile of state ``chunk`` in a contiguous (.., N, P) buffer."""
    return chunk * N * P + offs_n[:, None] * P + offs_p[None, :], (offs_n[:, None] < N) & (offs_p[None, :] < P)


@triton.jit
def _load_state(s_ptr, chunk, offs_n, offs_p, N, P):
    """Load the (BLOCK_N, BLOCK_P) tile of state ``chunk`` (float32), zero-padded."""
    offs, mask = _state_tile(chunk, offs_n, offs_p, N, P)
    return tl.load(s_ptr + offs, mask=mask, other=0.0)


@triton.jit
def _chunk_log_decay(a_ptr, t, T, stride_at, CHUNK: tl.constexpr):
    """In-chunk cumulative log decay g (CHUNK,) and its last value (padding steps add 0)."""
    a = tl.load(a_ptr + t * stride_at, mask=t < T, other=0.0).to(tl.float32)
    g = tl.cumsum(a, axis=0)
    g_last = tl.sum(tl.where(tl.arange(0, CHUNK) == CHUNK - 1, g, 0.0), axis=0)
    return g, g_last


@triton.jit
def _chunk_kv_decay(
    k_ptr, v_ptr, a_ptr, t, T, stride_kt, stride_vt, stride_at, offs_n, offs_p, N, P, CHUNK: tl.constexpr
):
    """A chunk's keys, values, g and g_last, and its causal decay exp(g_t - g_s) (s <= t, else 0).

    The operands shared by the forward and both backward chunk kernels.
    """
    offs_t = tl.arange(0, CHUNK)
    k = _load_rows(k_ptr, t, T, stride_kt, offs_n, N)
    v = _load_rows(v_ptr, t, T, stride_vt, offs_p, P)
    g, g_last = _chunk_log_decay(a_ptr, t, T, stride_at, CHUNK)
    causal = offs_t[:, None] >= offs_t[None, :]
    decay = tl.exp(tl.where(causal, g[:, None] - g[None, :], float("-inf")))
    return k, v, g, g_last, decay


@triton.jit
def _chunk_program(
    H,
    n_chunks,
    stride_kb,
    stride_kh,
    stride_vb,
    stride_vh,
    stride_ab,
    stride_ah,
    p_block,
    CHUNK: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_P: tl.constexpr,
):
    """Where a program of a (chunks, B*H, ...) grid works: its (b, h) offsets into q/k, v and the log decays.

    Also its chunk's state index, rows ``t``, feature offsets over N and its ``p_block``-th BLOCK_P slice of P.
    """
    pid_c = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    t = pid_c * CHUNK + tl.arange(0, CHUNK)
    offs_n = tl.arange(0, BLOCK_N)
    offs_p = p_block * BLOCK_P + tl.arange(0, BLOCK_P)
    off_k = b * stride_kb + h * stride_kh
    off_v = b * stride_vb + h * stride_vh
    off_a = b * stride_ab + h * stride_ah
    return off_k, off_v, off_a, pid_bh * n_chunks + pid_c, t, offs_n, offs_p


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
    off_x, off_y, off_a, chunk, t, offs_n, offs_p = _chunk_program(
        H, n_chunks, stride_xb, stride_xh, stride_yb, stride_yh, stride_ab, stride_ah, 0, CHUNK, BLOCK_N, BLOCK_P
    )
    x = _load_rows(x_ptr + off_x, t, T, stride_xt, offs_n, N)
    y = _load_rows(y_ptr + off_y, t, T, stride_yt, offs_p, P)
    g, g_last = _chunk_log_decay(a_ptr + off_a, t, T, stride_at, CHUNK)
    w = tl.exp(g_last - g) if TO_END else tl.exp(g)
    xw = (x * w[:, None]).to(x.dtype)
    state = tl.dot(tl.trans(xw), y, input_precision=PRECISION)
    offs, mask = _state_tile(chunk, offs_n, offs_p, N, P)
    tl.store(s_ptr + offs, state, mask=mask)
    tl.store(glast_ptr + chunk, g_last)


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
    off_qk, off_v, off_a, chunk, t, offs_n, offs_p = _chunk_program(
        H,
        n_chunks,
        stride_qb,
        stride_qh,
        stride_vb,
        stride_vh,
        stride_ab,
        stride_ah,
        tl.program_id(2),
        CHUNK,
        BLOCK_N,
        BLOCK_P,
    )
    q = _load_rows(q_ptr + off_qk, t, T, stride_qt, offs_n, N)
    k, v, g, _, decay = _chunk_kv_decay(
        k_ptr + off_qk, v_ptr + off_v, a_ptr + off_a, t, T, stride_qt, stride_vt, stride_at, offs_n, offs_p, N, P, CHUNK
    )
    s_in = _load_state(s_ptr, chunk, offs_n, offs_p, N, P)
    scores = tl.dot(q, tl.trans(k), input_precision=PRECISION) * decay
    y = tl.dot(scores.to(v.dtype), v, input_precision=PRECISION)
    y += tl.dot(q, s_in.to(q.dtype), input_precision=PRECISION) * tl.exp(g)[:, None]
    _store_rows(y_ptr + off_v, y, t, T, stride_vt, offs_p, P)


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
    off_qk, off_v, off_a, chunk, t, offs_n, offs_p = _chunk_program(
        H, n_chunks, stride_qb, stride_qh, stride_vb, stride_vh, stride_ab, stride_ah, 0, CHUNK, BLOCK_N, BLOCK_P
    )
    k, v, g, _, decay = _chunk_kv_decay(
        k_ptr + off_qk, v_ptr + off_v, a_ptr + off_a, t, T, stride_qt, stride_vt, stride_at, offs_n, offs_p, N, P, CHUNK
    )
    do = _load_rows(do_ptr + off_v, t, T, stride_vt, offs_p, P)
    s_in = _load_state(s_ptr, chunk, offs_n, offs_p, N, P)
    dscores = tl.dot(do, tl.trans(v), input_precision=PRECISION) * decay
    dq = tl.dot(dscores.to(k.dtype), k, input_precision=PRECISION)
    dq += tl.dot(do, tl.trans(s_in.to(do.dtype)), input_precision=PRECISION) * tl.exp(g)[:, None]
    _store_rows(dq_ptr + off_qk, dq, t, T, stride_qt, offs_n, N)
    q = _load_rows(q_ptr + off_qk, t, T, stride_qt, offs_n, N)
    tl.store(dgq_ptr + off_a + t * stride_at, tl.sum(q * dq, axis=1), mask=t < T)


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
    off_qk, off_v, off_a, chunk, t, offs_n, offs_p = _chunk_program(
        H, n_chunks, stride_qb, stride_qh, stride_vb, stride_vh, stride_ab, stride_ah, 0, CHUNK, BLOCK_N, BLOCK_P
    )
    q = _load_rows(q_ptr + off_qk, t, T, stride_qt, offs_n, N)
    k, v, g, g_last, decay = _chunk_kv_decay(
        k_ptr + off_qk, v_ptr + off_v, a_ptr + off_a, t, T, stride_qt, stride_vt, stride_at, offs_n, offs_p, N, P, CHUNK
    )
    do = _load_rows(do_ptr + off_v, t, T, stride_vt, offs_p, P)
    ds = _load_state(ds_ptr, chunk, offs_n, offs_p, N, P)
    tail = tl.exp(g_last - g)[:, None]
    scores = tl.dot(q, tl.trans(k), input_precision=PRECISION) * decay
    dv = tl.dot(tl.trans(scores.to(do.dtype)), do, input_precision=PRECISION)
    dv += tl.dot(k, ds.to(k.dtype), input_precision=PRECISION) * tail
    _store_rows(dv_ptr + off_v, dv, t, T, stride_vt, offs_p, P)
    dscores = tl.dot(do, tl.trans(v), input_precision=PRECISION) * decay
    dk = tl.dot(tl.trans(dscores.to(q.dtype)), q, input_precision=PRECISION)
    dk += tl.dot(v, tl.trans(ds.to(v.dtype)), input_precision=PRECISION) * tail
    _store_rows(dk_ptr + off_qk, dk, t, T, stride_qt, offs_n, N)
    tl.store(dgk_ptr + off_a + t * stride_at, tl.sum(k * dk, axis=1), mask=t < T)
