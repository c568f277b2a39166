"""Mamba-3 complex (rotary) selective scan: chunked PyTorch reference, Triton kernel and dispatcher.

The recurrence is the single-input single-output Mamba-3 SSM (Lahoti et al., 2026, "Mamba-3";
``mamba_ssm.modules.mamba3.Mamba3`` and ``mamba3_siso_step_ref`` in
``tests/ops/triton/test_mamba3_siso.py`` of state-spaces/mamba). Per batch element and head, with
``q_t = C_t`` (query), ``k_t = B_t`` (key), ``v_t = x_t``, step ``Δ_t``, log decay ``a_t = Δ_t A_t``
(``A_t < 0`` data-dependent), trapezoid weight ``λ_t ∈ (0, 1)`` and angle rate ``θ_t``:

    φ_t   = φ_{t-1} + θ_t Δ_t                                   (accumulated rotation angles)
    k̃_t  = R(φ_t) k_t,   q̃_t = R(φ_t) q_t                     (R rotates pairs (2i, 2i+1) by φ_t[i])
    h_t   = e^{a_t} h_{t-1} + (1-λ_t) Δ_t e^{a_t} k̃_{t-1} v_{t-1}^T + λ_t Δ_t k̃_t v_t^T
    y_t   = h_tᵀ q̃_t

The rotation is the complex-diagonal state transition ``h ← e^{a} e^{iθΔ} h`` written in real pairs:
rotating the state by the accumulated angle is the same as rotating keys and queries by it (the
"RoPE trick" of the paper), which keeps the scan real and scalar-decay. The two input terms are the
trapezoidal (two-term) discretisation; ``λ ≡ 1`` gives Mamba-2's Euler rule.

Folding the trapezoid into per-key weights ``w_s = λ_s Δ_s + (1-λ_{s+1}) Δ_{s+1}`` gives

    y_t = Σ_{s<t} e^{G_t - G_s} w_s (q̃_t·k̃_s) v_s + λ_t Δ_t (q̃_t·k̃_t) v_t,     G_t = Σ_{r≤t} a_r

so the heavy part is a chunked decay scan over ``(q̃, w·k̃, v, a)``: :func:`chunk_scan_ref` (PyTorch,
vectorised over chunks, no loop over time) or the Triton kernels (``_complex_scan_*_kernel``: the
three SSD passes — per-chunk states, state passing, per-chunk outputs — parallel over chunks,
forward and backward). The chunk size changes the tiling, not the result.
Rotation, weights, the diagonal correction and the carried state are cheap elementwise or einsum
terms shared by both paths.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F

from cascadelab.kernels._triton import Backend, next_power_of_2, select_backend

try:
    from cascadelab.kernels import _complex_scan_triton as _kernels
except ImportError:  # pragma: no cover - no triton: the reference path serves every device
    _kernels = None  # type: ignore[assignment]

TWO_PI = 2.0 * math.pi


class ScanInputs(NamedTuple):
    """Per-step scan inputs: q, k (B,T,H,N); v (B,T,H,P); log_decay = Δ·A, dt = Δ, trap = λ (B,T,H); θ (B,T,H,A)."""

    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    log_decay: torch.Tensor
    dt: torch.Tensor
    trap: torch.Tensor
    angle_rate: torch.Tensor


class ScanState(NamedTuple):
    """Carried Mamba-3 state: angles (B,H,A), SSM state (B,H,N,P), last rotated key (B,H,N), value (B,H,P)."""

    phase: torch.Tensor
    ssm: torch.Tensor
    k_prev: torch.Tensor
    v_prev: torch.Tensor


def rotate_pairs(x: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved pairs ``(x[2i], x[2i+1])`` by ``phase[..., i]``; pairs beyond ``phase`` stay put."""
    n_angles = phase.shape[-1]
    if 2 * n_angles > x.shape[-1]:
        raise ValueError(f"phase has {n_angles} angles but x has only {x.shape[-1] // 2} pairs")
    pairs = x.unflatten(-1, (-1, 2))
    rot, rest = pairs[..., :n_angles, :], pairs[..., n_angles:, :]
    cos, sin = torch.cos(phase), torch.sin(phase)
    x0, x1 = rot[..., 0], rot[..., 1]
    rotated = torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1)
    return torch.cat((rotated, rest), dim=-2).flatten(-2)


def _segsum(x: torch.Tensor) -> torch.Tensor:
    """Stable segment sums: out[..., i, j] = x[..., j+1] + ... + x[..., i] for i >= j, else -inf."""
    length = x.shape[-1]
    xx = x.unsqueeze(-1).expand(*x.shape, length)
    below = torch.tril(torch.ones(length, length, dtype=torch.bool, device=x.device), diagonal=-1)
    sums = torch.cumsum(xx.masked_fill(~below, 0.0), dim=-2)
    keep = torch.tril(torch.ones(length, length, dtype=torch.bool, device=x.device))
    return sums.masked_fill(~keep, float("-inf"))


def chunk_scan_ref(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, log_decay: torch.Tensor, chunk_size: int = 64
) -> torch.Tensor:
    """Chunked decay scan in PyTorch: y_t = Σ_{s≤t} e^{G_t-G_s} (q_t·k_s) v_s, zero initial state.

    Shapes: q, k (B,T,H,N); v (B,T,H,P); log_decay (B,T,H) -> y (B,T,H,P), float32. Vectorised over
    chunks: an in-chunk quadratic form, per-chunk states, and one segment-sum matrix that passes the
    states between chunks (the SSD algorithm of Mamba-2, ``ssd_minimal.py``).
    """
    bsz, seqlen, heads, _ = q.shape
    chunk = max(1, min(chunk_size, seqlen))
    pad = (-seqlen) % chunk
    q, k, v, a = (t.float() for t in (q, k, v, log_decay))
    if pad:
        q, k, v = (F.pad(t, (0, 0, 0, 0, 0, pad)) for t in (q, k, v))
        a = F.pad(a, (0, 0, 0, pad))
    n_chunks = (seqlen + pad) // chunk
    q, k, v = (t.reshape(bsz, n_chunks, chunk, heads, -1) for t in (q, k, v))
    a = a.reshape(bsz, n_chunks, chunk, heads).permute(0, 3, 1, 2)  # (B, H, c, l)
    g = torch.cumsum(a, dim=-1)
    # 1. inside each chunk: the masked, decayed quadratic form
    scores = torch.einsum("bclhn,bcshn->bhcls", q, k) * torch.exp(_segsum(a))
    y_diag = torch.einsum("bhcls,bcshp->bclhp", scores, v)
    if n_chunks == 1:  # short sequences: nothing to carry between chunks
        return y_diag.reshape(bsz, chunk, heads, -1)[:, :seqlen]
    # 2. state at the end of each chunk from its own inputs
    to_end = torch.exp(g[..., -1:] - g).permute(0, 2, 3, 1).unsqueeze(-1)  # (B, c, l, H, 1)
    states = torch.einsum("bclhn,bclhp->bchnp", k * to_end, v)
    # 3. pass states between chunks: entering chunk c = Σ_{c'<c} decay(c'→c) · states[c']
    states = torch.cat((torch.zeros_like(states[:, :1]), states), dim=1)
    chunk_decay = torch.exp(_segsum(F.pad(g[..., -1], (1, 0))))  # (B, H, c+1, c+1)
    entering = torch.einsum("bhzc,bchnp->bzhnp", chunk_decay, states)[:, :-1]
    # 4. read the entering state out at every position of the chunk
    q_dec = q * torch.exp(g).permute(0, 2, 3, 1).unsqueeze(-1)
    y_off = torch.einsum("bclhn,bchnp->bclhp", q_dec, entering)
    y = (y_diag + y_off).reshape(bsz, n_chunks * chunk, heads, -1)
    return y[:, :seqlen]


def _precision(t: torch.Tensor) -> str:
    # follow torch's TF32 switch; otherwise 3xTF32 keeps float32 accuracy on tensor cores
    if not t.is_cuda:
        return "ieee"
    return "tf32" if torch.backends.cuda.matmul.allow_tf32 else "tf32x3"


# chunk cap for states >= 128 wide: 64 measured faster with TF32 on an H100 (fwd+bwd 2.1 vs 2.9 ms at
# B4 T2048 H16 N128 P64); 3xTF32/IEEE tiles hold more and keep 32, the size that was run there
_MAX_WIDE_CHUNK = {"tf32": 64, "tf32x3": 32, "ieee": 32}


def _launch_meta(q: torch.Tensor, v: torch.Tensor, chunk_size: int) -> dict[str, Any]:
    block_n = max(16, next_power_of_2(q.shape[-1]))
    block_p = max(16, next_power_of_2(v.shape[-1]))
    precision = _precision(q)
    # tl.dot needs tiles >= 16; wide states may get shorter chunks so the tiles fit in shared memory
    largest = _MAX_WIDE_CHUNK[precision] if max(block_n, block_p) >= 128 else 64
    return {
        "CHUNK": min(max(16, next_power_of_2(chunk_size)), largest),
        "BLOCK_N": block_n,
        "BLOCK_P": block_p,
        "PRECISION": precision,
    }


def _strides(q: torch.Tensor, v: torch.Tensor, a: torch.Tensor) -> tuple[int, ...]:
    # kernels index (b, h, t) with the feature dimension contiguous
    return (
        q.stride(0),
        q.stride(2),
        q.stride(1),
        v.stride(0),
        v.stride(2),
        v.stride(1),
        a.stride(0),
        a.stride(2),
        a.stride(1),
    )


def _chunk_states(
    x: torch.Tensor, y: torch.Tensor, a: torch.Tensor, to_end: bool, reverse: bool, meta: dict[str, Any]
) -> torch.Tensor:
    """Per-chunk states Σ w_s x_s y_sᵀ (Triton pass 1), then passed between chunks in place (pass 2)."""
    bsz, seqlen, heads, n = x.shape
    p = y.shape[-1]
    n_chunks = -(-seqlen // meta["CHUNK"])
    states = torch.empty(bsz, heads, n_chunks, n, p, dtype=torch.float32, device=x.device)
    g_last = torch.empty(bsz, heads, n_chunks, dtype=torch.float32, device=x.device)
    _kernels._complex_scan_chunk_state_kernel[(n_chunks, bsz * heads)](
        x, y, a, states, g_last, seqlen, heads, n, p, n_chunks, *_strides(x, y, a), TO_END=to_end, **meta
    )
    block = min(1024, next_power_of_2(n * p))
    _kernels._complex_scan_state_pass_kernel[(bsz * heads, -(-(n * p) // block))](
        states, g_last, n_chunks, n * p, REVERSE=reverse, BLOCK=block
    )
    return states


class _ChunkScanTriton(torch.autograd.Function):
    """Autograd wrapper of the three-pass Triton scan; log-decay gradient from dq and dk."""

    @staticmethod
    def forward(
        ctx: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, log_decay: torch.Tensor, chunk_size: int
    ) -> torch.Tensor:
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        a = log_decay.float().contiguous()
        bsz, seqlen, heads, n = q.shape
        p = v.shape[-1]
        meta = _launch_meta(q, v, chunk_size)
        entering = _chunk_states(k, v, a, to_end=True, reverse=False, meta=meta)
        y = torch.empty_like(v)
        block_p = min(meta["BLOCK_P"], 64)
        grid = (entering.shape[2], bsz * heads, -(-p // block_p))
        _kernels._complex_scan_chunk_fwd_kernel[grid](
            q,
            k,
            v,
            a,
            entering,
            y,
            seqlen,
            heads,
            n,
            p,
            entering.shape[2],
            *_strides(q, v, a),
            **{**meta, "BLOCK_P": block_p},
        )
        ctx.save_for_backward(q, k, v, a)
        ctx.meta = meta
        return y

    @staticmethod
    def backward(ctx: Any, dy: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        q, k, v, a = ctx.saved_tensors
        meta = ctx.meta
        bsz, seqlen, heads, n = q.shape
        p = v.shape[-1]
        do = dy.to(v.dtype).contiguous()
        entering = _chunk_states(k, v, a, to_end=True, reverse=False, meta=meta)  # recomputed, not stored
        leaving_grad = _chunk_states(q, do, a, to_end=False, reverse=True, meta=meta)
        dq = torch.empty(q.shape, dtype=torch.float32, device=q.device)
        dk = torch.empty_like(dq)
        dv = torch.empty(v.shape, dtype=torch.float32, device=v.device)
        strides = _strides(q, v, a)
        n_chunks = entering.shape[2]
        grid = (n_chunks, bsz * heads)
        dg_q = torch.empty(a.shape, dtype=torch.float32, device=a.device)
        dg_k = torch.empty_like(dg_q)
        _kernels._complex_scan_chunk_bwd_dq_kernel[grid](
            q, k, v, a, do, entering, dq, dg_q, seqlen, heads, n, p, n_chunks, *strides, **meta
        )
        _kernels._complex_scan_chunk_bwd_dkv_kernel[grid](
            q, k, v, a, do, leaving_grad, dk, dv, dg_k, seqlen, heads, n, p, n_chunks, *strides, **meta
        )
        # y depends on G only through differences G_t - G_s, so dG_t = q_t·dq_t - k_t·dk_t
        d_cum = dg_q - dg_k
        d_log_decay = d_cum.flip(1).cumsum(1).flip(1)
        return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype), d_log_decay, None


def chunk_scan_triton(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, log_decay: torch.Tensor, chunk_size: int = 64
) -> torch.Tensor:
    """Triton launcher of the chunked decay scan (contract of :func:`chunk_scan_ref`, output in v's dtype)."""
    if _kernels is None:
        raise RuntimeError("triton is not installed: use chunk_scan_ref")
    out: torch.Tensor = _ChunkScanTriton.apply(q, k, v, log_decay, chunk_size)
    return out


def _check_shapes(inputs: ScanInputs) -> None:
    q, k, v, log_decay, dt, trap, angle_rate = inputs
    if q.ndim != 4 or q.shape != k.shape:
        raise ValueError(f"q and k must share a (B,T,H,N) shape, got {tuple(q.shape)} and {tuple(k.shape)}")
    if v.ndim != 4 or v.shape[:3] != q.shape[:3]:
        raise ValueError(f"v must be (B,T,H,P) matching q's {tuple(q.shape[:3])}, got {tuple(v.shape)}")
    if log_decay.shape != q.shape[:3]:
        raise ValueError(f"log_decay must be (B,T,H) = {tuple(q.shape[:3])}, got {tuple(log_decay.shape)}")
    if dt.shape != log_decay.shape or trap.shape != log_decay.shape:
        raise ValueError("dt and trap must have log_decay's (B,T,H) shape")
    if angle_rate.shape[:3] != q.shape[:3]:
        raise ValueError(f"angle_rate must be (B,T,H,A), got {tuple(angle_rate.shape)}")


def complex_scan(
    inputs: ScanInputs,
    initial_state: ScanState | None = None,
    chunk_size: int = 64,
    return_final_state: bool = False,
    backend: Backend = "auto",
) -> tuple[torch.Tensor, ScanState | None]:
    """Mamba-3 SISO scan over a sequence (see the module docstring for the equations).

    ``inputs`` are the per-step sequences (shapes in :class:`ScanInputs`; angle_rate has 2A <= N).
    ``initial_state`` continues a cached sequence; ``backend`` picks the core: "auto" (Triton on
    CUDA, reference elsewhere), "triton" or "ref". Returns y (B,T,H,P) in float32 and, if asked,
    the state after the last step.
    """
    _check_shapes(inputs)
    q, k, v, log_decay, dt, trap, angle_rate = inputs
    dt, trap, log_decay = dt.float(), trap.float(), log_decay.float()
    phase = torch.cumsum(angle_rate.float() * dt.unsqueeze(-1), dim=1)
    if initial_state is not None:
        phase = phase + initial_state.phase.unsqueeze(1)
    phase = torch.remainder(phase, TWO_PI)
    q_rot = rotate_pairs(q.float(), phase)
    k_rot = rotate_pairs(k.float(), phase)
    gamma = trap * dt  # weight of the current input
    beta_hat = (1.0 - trap) * dt  # weight of the previous input, before its decay
    weight = gamma + F.pad(beta_hat[:, 1:], (0, 0, 0, 1))  # w_s = γ_s + β̂_{s+1}, β̂_T = 0
    k_w = k_rot * weight.unsqueeze(-1)
    vf = v.float()
    if select_backend(q, backend) == "triton":
        y = chunk_scan_triton(q_rot, k_w, vf, log_decay, chunk_size).float()
    else:
        y = chunk_scan_ref(q_rot, k_w, vf, log_decay, chunk_size)
    # the diagonal term carries γ_t only (β̂_{t+1} reaches v_t from the next step on)
    qk = (q_rot * k_rot).sum(-1)
    y = y + ((gamma - weight) * qk).unsqueeze(-1) * vf
    cum = torch.cumsum(log_decay, dim=1)
    start = None
    if initial_state is not None:
        carried = initial_state.k_prev.float().unsqueeze(-1) * initial_state.v_prev.float().unsqueeze(-2)
        start = initial_state.ssm.float() + beta_hat[:, 0, :, None, None] * carried
        y = y + torch.einsum("bthn,bhnp,bth->bthp", q_rot, start, torch.exp(cum))
    final = None
    if return_final_state:
        to_end = torch.exp(cum[:, -1:] - cum)
        ssm = torch.einsum("bthn,bth,bthp->bhnp", k_w, to_end, vf)
        if start is not None:
            ssm = ssm + start * torch.exp(cum[:, -1])[..., None, None]
        final = ScanState(phase[:, -1], ssm, k_rot[:, -1], vf[:, -1])
    return y, final


def complex_scan_naive(inputs: ScanInputs, initial_state: ScanState | None = None) -> tuple[torch.Tensor, ScanState]:
    """Step-by-step recurrence, one Python iteration per time step: the specification, for tests only."""
    q, k, v, log_decay, dt, trap, angle_rate = inputs
    bsz, seqlen, heads, n = q.shape
    p = v.shape[-1]
    if initial_state is None:
        state = ScanState(
            q.new_zeros(bsz, heads, angle_rate.shape[-1]),
            q.new_zeros(bsz, heads, n, p),
            q.new_zeros(bsz, heads, n),
            q.new_zeros(bsz, heads, p),
        )
    else:
        state = initial_state
    phase, h, k_prev, v_prev = (t.float() for t in state)
    ys = []
    for t in range(seqlen):
        phase = torch.remainder(phase + angle_rate[:, t].float() * dt[:, t, :, None], TWO_PI)
        q_t = rotate_pairs(q[:, t].float(), phase)
        k_t = rotate_pairs(k[:, t].float(), phase)
        v_t = v[:, t].float()
        alpha = torch.exp(log_decay[:, t].float())[..., None, None]
        lam, delta = trap[:, t, :, None, None], dt[:, t, :, None, None]
        h = (
            alpha * h
            + (1 - lam) * delta * alpha * k_prev.unsqueeze(-1) * v_prev.unsqueeze(-2)
            + lam * delta * k_t.unsqueeze(-1) * v_t.unsqueeze(-2)
        )
        ys.append(torch.einsum("bhnp,bhn->bhp", h, q_t))
        k_prev, v_prev = k_t, v_t
    return torch.stack(ys, dim=1), ScanState(phase, h, k_prev, v_prev)


def complex_scan_ref(*args: Any, **kwargs: Any) -> tuple[torch.Tensor, ScanState | None]:
    """:func:`complex_scan` on the chunked PyTorch reference core."""
    return complex_scan(*args, **{**kwargs, "backend": "ref"})


def complex_scan_triton(*args: Any, **kwargs: Any) -> tuple[torch.Tensor, ScanState | None]:
    """:func:`complex_scan` on the Triton core (CUDA, or CPU under TRITON_INTERPRET=1)."""
    return complex_scan(*args, **{**kwargs, "backend": "triton"})
