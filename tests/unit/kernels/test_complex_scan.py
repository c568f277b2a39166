"""The chunked, vectorised complex scan against the step-by-step Mamba-3 recurrence."""

from __future__ import annotations

import pytest
import torch

from cascadelab.kernels import ScanInputs, ScanState, complex_scan, complex_scan_naive, rotate_pairs


def make_inputs(seqlen: int = 37, seed: int = 0, dtype: torch.dtype = torch.float64) -> ScanInputs:
    gen = torch.Generator().manual_seed(seed)
    bsz, heads, n, p, angles = 2, 3, 8, 5, 2

    def r(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen, dtype=dtype)

    dt = torch.nn.functional.softplus(r(bsz, seqlen, heads) - 1)
    return ScanInputs(
        r(bsz, seqlen, heads, n),
        r(bsz, seqlen, heads, n),
        r(bsz, seqlen, heads, p),
        -dt * torch.rand(bsz, seqlen, heads, generator=gen, dtype=dtype),
        dt,
        torch.rand(bsz, seqlen, heads, generator=gen, dtype=dtype),
        r(bsz, seqlen, heads, angles),
    )


@pytest.mark.parametrize("chunk_size", [1, 4, 16, 64])
def test_chunked_scan_equals_step_by_step_recurrence(chunk_size: int) -> None:
    inputs = make_inputs()
    y_naive, s_naive = complex_scan_naive(inputs)
    y, s = complex_scan(inputs, chunk_size=chunk_size, return_final_state=True, backend="ref")
    assert s is not None
    torch.testing.assert_close(y, y_naive.float(), atol=2e-5, rtol=1e-5)
    for got, want in zip(s, s_naive, strict=True):
        torch.testing.assert_close(got, want.float(), atol=2e-5, rtol=1e-5)


def test_scan_continues_from_a_carried_state() -> None:
    inputs = make_inputs(seqlen=30)
    y_naive, s_naive = complex_scan_naive(inputs)
    y1, s1 = complex_scan(ScanInputs(*(t[:, :17] for t in inputs)), chunk_size=8, return_final_state=True)
    y2, s2 = complex_scan(
        ScanInputs(*(t[:, 17:] for t in inputs)), initial_state=s1, chunk_size=8, return_final_state=True
    )
    assert s2 is not None
    torch.testing.assert_close(torch.cat([y1, y2], 1), y_naive.float(), atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(s2.ssm, s_naive.ssm.float(), atol=2e-5, rtol=1e-5)


def test_chunked_scan_gradients_equal_recurrence_gradients() -> None:
    inputs = ScanInputs(*(t.requires_grad_() for t in make_inputs(seqlen=12)))
    weights = torch.randn(2, 12, 3, 5, dtype=torch.float64)
    y_naive, _ = complex_scan_naive(inputs)
    want = torch.autograd.grad((y_naive * weights).sum(), inputs)
    y, _ = complex_scan(inputs, chunk_size=4)
    got = torch.autograd.grad((y.double() * weights).sum(), inputs)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g.double(), w, atol=1e-4, rtol=1e-4)


def test_trapezoid_weight_one_is_the_euler_rule() -> None:
    inputs = make_inputs(seqlen=10)
    q, k, v, log_decay, dt, _, angle_rate = inputs
    y, _ = complex_scan(inputs._replace(trap=torch.ones_like(dt)))
    state = torch.zeros(2, 3, 8, 5, dtype=torch.float64)
    phase = torch.zeros(2, 3, 2, dtype=torch.float64)
    for t in range(10):
        phase = phase + angle_rate[:, t] * dt[:, t, :, None]
        k_t, q_t = rotate_pairs(k[:, t], phase), rotate_pairs(q[:, t], phase)
        state = (
            torch.exp(log_decay[:, t])[..., None, None] * state
            + (dt[:, t, :, None] * k_t)[..., None] * v[:, t, :, None, :]
        )
        torch.testing.assert_close(y[:, t], torch.einsum("bhnp,bhn->bhp", state, q_t).float(), atol=2e-5, rtol=1e-5)


def test_rotate_pairs_rotates_only_the_leading_pairs() -> None:
    x = torch.tensor([[1.0, 0.0, 3.0, 4.0]])
    out = rotate_pairs(x, torch.tensor([[torch.pi / 2]]))
    torch.testing.assert_close(out, torch.tensor([[0.0, 1.0, 3.0, 4.0]]), atol=1e-6, rtol=0)


def test_scan_state_is_a_named_tuple() -> None:
    _, state = complex_scan(make_inputs(seqlen=3), return_final_state=True)
    assert isinstance(state, ScanState)
    assert state.ssm.shape == (2, 3, 8, 5) and state.phase.shape == (2, 3, 2)


def test_bad_shapes_and_backends_are_rejected() -> None:
    inputs = make_inputs(seqlen=4)
    with pytest.raises(ValueError, match="v must be"):
        complex_scan(inputs._replace(v=inputs.v[:, :3]))
    with pytest.raises(ValueError, match="backend must be"):
        complex_scan(inputs, backend="cuda")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="angles but x has only"):
        rotate_pairs(inputs.q, torch.zeros(*inputs.q.shape[:-1], 5, dtype=inputs.q.dtype))
