"""Kernel-vs-reference cases, run by test_kernels_triton.py on CUDA or, in a subprocess, on CPU under
TRITON_INTERPRET=1 (which must be set before triton is imported, hence the separate process).

``python kernel_cases.py DEVICE`` prints one JSON object: case name -> worst relative error.
"""

from __future__ import annotations

import json
import sys

import torch

from cascadelab.kernels import (
    GNProxStep,
    PackedTernaryWeight,
    ScanInputs,
    ScanState,
    bitlinear_matmul_ref,
    bitlinear_matmul_triton,
    complex_scan,
    gnprox_update_ref,
    gnprox_update_triton,
    pack_ternary,
    quantize_activation_int8,
    quantize_weight_ternary,
)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().float(), b.detach().float()
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-6))


def _scan_inputs(device: str, gen: torch.Generator, seqlen: int = 40) -> list[torch.Tensor]:
    bsz, heads, n, p, angles = 2, 2, 16, 8, 4

    def r(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen).to(device)

    dt = torch.nn.functional.softplus(r(bsz, seqlen, heads) - 2)
    return [
        r(bsz, seqlen, heads, n),  # q
        r(bsz, seqlen, heads, n),  # k
        r(bsz, seqlen, heads, p),  # v
        -dt * torch.rand(bsz, seqlen, heads, generator=gen).to(device),  # log decay
        dt,
        torch.sigmoid(r(bsz, seqlen, heads)),  # trapezoid λ
        r(bsz, seqlen, heads, angles),  # angle rate
    ]


def scan_errors(device: str) -> dict[str, float]:
    """Triton vs reference complex scan with a carried state: output, final state, every input gradient."""
    gen = torch.Generator().manual_seed(0)
    inputs = _scan_inputs(device, gen)
    prev = _scan_inputs(device, gen, seqlen=1)
    state = ScanState(prev[6][:, 0], torch.randn(2, 2, 16, 8, generator=gen).to(device), prev[1][:, 0], prev[2][:, 0])
    grad_out = torch.randn(2, 40, 2, 8, generator=gen).to(device)
    results = {}
    for backend in ("triton", "ref"):
        leaves = [t.clone().requires_grad_() for t in inputs]
        y, final = complex_scan(
            ScanInputs(*leaves), initial_state=state, chunk_size=16, return_final_state=True, backend=backend
        )
        assert final is not None
        grads = torch.autograd.grad((y * grad_out).sum() + final.ssm.sum(), leaves)
        results[backend] = (y, final, grads)
    y_t, f_t, g_t = results["triton"]
    y_r, f_r, g_r = results["ref"]
    errors = {"scan_y": _rel(y_t, y_r), "scan_state": _rel(f_t.ssm, f_r.ssm)}
    names = ("q", "k", "v", "log_decay", "dt", "trap", "angle_rate")
    errors.update({f"scan_grad_{n}": _rel(a, b) for n, a, b in zip(names, g_t, g_r, strict=True)})
    return errors


def bitlinear_errors(device: str) -> dict[str, float]:
    """Triton vs reference ternary x int8 matmul on ragged shapes (K not a multiple of 4)."""
    gen = torch.Generator().manual_seed(1)
    errors = {}
    for m, k, n in ((5, 70, 33), (40, 128, 96)):
        w_codes, w_scale = quantize_weight_ternary(torch.randn(n, k, generator=gen))
        x_codes, x_scale = quantize_activation_int8(torch.randn(m, k, generator=gen))
        weight = PackedTernaryWeight(pack_ternary(w_codes).to(device), w_scale.to(device), k)
        args = (x_codes.to(device), x_scale.to(device), weight)
        errors[f"bitlinear_{m}x{k}x{n}"] = _rel(bitlinear_matmul_triton(*args), bitlinear_matmul_ref(*args))
    return errors


def gnprox_errors(device: str) -> dict[str, float]:
    """Triton vs reference fused GNProx step (ragged sizes, with and without a curvature refresh)."""
    gen = torch.Generator().manual_seed(2)
    errors = {}
    for numel, refresh in ((700, True), (2500, False)):
        base = [torch.randn(numel, generator=gen).to(device) for _ in range(3)]
        h0 = torch.rand(numel, generator=gen).to(device) * 1e-2
        out = {}
        for name, fn in (("triton", gnprox_update_triton), ("ref", gnprox_update_ref)):
            p, g, m, h = base[0].clone(), base[1].clone() * 1e-2, base[2].clone() * 1e-2, h0.clone()
            fn(p, g, m, h, GNProxStep(1e-2, 0.9, 0.99, 0.5, 1e-12, 0.1, refresh))
            out[name] = (p, m, h)
        for i, part in enumerate(("p", "m", "h")):
            errors[f"gnprox_{numel}_{part}"] = _rel(out["triton"][i], out["ref"][i])
    return errors


if __name__ == "__main__":
    dev = sys.argv[1] if len(sys.argv) > 1 else "cpu"
    print(json.dumps({**scan_errors(dev), **bitlinear_errors(dev), **gnprox_errors(dev)}))
