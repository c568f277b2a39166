"""Speed of the SIGMA Triton kernels against their PyTorch references, as ratios measured in one run.

    PYTHONPATH=src python benchmarks/bench_sigma_kernels.py            # on a CUDA machine
    PYTHONPATH=src python benchmarks/bench_sigma_kernels.py --quick    # fewer sizes

Prints, for the complex scan core (forward, forward+backward) and the BitLinear ternary x int8 matmul
at several sizes, the median time of each path and reference/kernel. On a machine without CUDA it
says that the Triton path needs CUDA and times the CPU reference alone.
"""

from __future__ import annotations

import argparse
import importlib.util
from collections.abc import Callable

import torch

from cascadelab.kernels import (
    TRITON_AVAILABLE,
    PackedTernaryWeight,
    ScanInputs,
    bitlinear_matmul_ref,
    bitlinear_matmul_triton,
    chunk_scan_ref,
    chunk_scan_triton,
    complex_scan,
    pack_ternary,
    quantize_activation_int8,
    quantize_weight_ternary,
)
from cascadelab.kernels.timing import median_ms

SCAN_SIZES = [(4, 512, 8, 64, 64), (8, 1024, 16, 64, 64), (4, 2048, 16, 128, 64), (16, 2048, 32, 64, 64)]
MATMUL_SIZES = [(1, 4096, 4096), (16, 4096, 4096), (512, 4096, 4096), (4096, 4096, 4096), (2048, 2048, 8192)]


def scan_inputs(size: tuple[int, ...], device: str, grad: bool) -> list[torch.Tensor]:
    """Random q, k, v, log-decay of the given (B, T, H, N, P) size."""
    b, t, h, n, p = size
    gen = torch.Generator(device=device).manual_seed(0)
    q = torch.randn(b, t, h, n, device=device, generator=gen) / n**0.5
    k = torch.randn(b, t, h, n, device=device, generator=gen) / n**0.5
    v = torch.randn(b, t, h, p, device=device, generator=gen)
    a = -0.1 * torch.rand(b, t, h, device=device, generator=gen)
    return [x.requires_grad_(grad) for x in (q, k, v, a)]


def bench_scan(device: str, reps: int, sizes: list[tuple[int, ...]], chunk: int) -> None:
    """Chunked decay scan: Triton vs chunked reference, forward and forward+backward."""
    print(f"\n== complex scan core (chunk {chunk}), float32, TF32 {torch.backends.cuda.matmul.allow_tf32} ==")
    print(f"{'B,T,H,N,P':>22} {'pass':>8} {'ref ms':>9} {'triton ms':>10} {'ref/triton':>11}")
    for size in sizes:
        for mode in ("fwd", "fwd+bwd"):
            grad = mode != "fwd"
            inputs = scan_inputs(size, device, grad)
            dy = torch.randn(*size[:3], size[4], device=device)

            def run(
                fn: Callable[..., torch.Tensor],
                inputs: list[torch.Tensor] = inputs,
                grad: bool = grad,
                dy: torch.Tensor = dy,
            ) -> None:
                y = fn(*inputs, chunk)
                if grad:
                    torch.autograd.grad(y, inputs, dy)

            label = ",".join(map(str, size))
            try:
                ref = median_ms(lambda: run(chunk_scan_ref), device, reps)
                tri = median_ms(lambda: run(chunk_scan_triton), device, reps)
            except (RuntimeError, torch.OutOfMemoryError) as err:  # report and go on to the next size
                print(f"{label:>22} {mode:>8} failed: {type(err).__name__}: {str(err)[:120]}")
                continue
            print(f"{label:>22} {mode:>8} {ref:9.3f} {tri:10.3f} {ref / tri:10.1f}x")


def bench_full_op(device: str, reps: int, size: tuple[int, ...], chunk: int) -> None:
    """The whole Mamba-3 op (rotation, trapezoid weights, scan core, diagonal term) on both backends."""
    b, t, h, n, p = size
    gen = torch.Generator(device=device).manual_seed(0)
    q, k, v, a = scan_inputs(size, device, grad=False)
    dt = torch.rand(b, t, h, device=device, generator=gen) * 0.1
    trap = torch.rand(b, t, h, device=device, generator=gen)
    theta = torch.randn(b, t, h, n // 4, device=device, generator=gen)
    leaves = [x.requires_grad_() for x in (q, k, v, a, dt, trap, theta)]
    dy = torch.randn(b, t, h, p, device=device)
    print(f"\n== full complex_scan op, fwd+bwd, {','.join(map(str, size))} ==")
    ms = {}
    for backend in ("ref", "triton"):

        def run(backend: str = backend) -> None:
            y, _ = complex_scan(ScanInputs(*leaves), chunk_size=chunk, backend=backend)  # type: ignore[arg-type]
            torch.autograd.grad(y, leaves, dy)

        ms[backend] = median_ms(run, device, reps)
    print(f"ref {ms['ref']:.3f} ms, triton {ms['triton']:.3f} ms, ref/triton {ms['ref'] / ms['triton']:.1f}x")


def bench_bitlinear(device: str, reps: int, sizes: list[tuple[int, int, int]]) -> None:
    """Ternary x int8 matmul: Triton vs unpack-and-matmul reference, with a bf16 dense matmul for scale."""
    print("\n== BitLinear ternary x int8 matmul ==")
    print(f"{'M,K,N':>18} {'ref ms':>9} {'triton ms':>10} {'ref/triton':>11} {'bf16 dense ms':>14}")
    for m, k, n in sizes:
        gen = torch.Generator(device=device).manual_seed(0)
        w = torch.randn(n, k, device=device, generator=gen)
        x = torch.randn(m, k, device=device, generator=gen)
        w_codes, w_scale = quantize_weight_ternary(w)
        x_codes, x_scale = quantize_activation_int8(x)
        args = (x_codes, x_scale, PackedTernaryWeight(pack_ternary(w_codes), w_scale, k))
        ref = median_ms(lambda args=args: bitlinear_matmul_ref(*args), device, reps)
        tri = median_ms(lambda args=args: bitlinear_matmul_triton(*args), device, reps)
        wb, xb = (w_codes.to(torch.bfloat16), x.to(torch.bfloat16))
        dense = median_ms(lambda wb=wb, xb=xb: xb @ wb.t(), device, reps)
        print(f"{f'{m},{k},{n}':>18} {ref:9.3f} {tri:10.3f} {ref / tri:10.1f}x {dense:14.3f}")


def main() -> None:
    """Run the kernel benchmarks and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--chunk", type=int, default=64)
    parser.add_argument("--quick", action="store_true", help="two sizes per kernel")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    has_cuda = torch.cuda.is_available()
    print(f"torch {torch.__version__}, triton available: {TRITON_AVAILABLE}, cuda: {has_cuda}")
    if not has_cuda or not TRITON_AVAILABLE:
        print("The Triton path needs CUDA (and triton): timing the CPU references alone.")
        cpu = torch.device("cpu").type
        for size in [(2, 256, 4, 32, 32)]:
            inputs = scan_inputs(size, cpu, grad=False)
            ms = median_ms(lambda inputs=inputs: chunk_scan_ref(*inputs, args.chunk), cpu, 5)
            print(f"scan ref fwd {size}: {ms:.2f} ms")
        return
    print(f"device: {torch.cuda.get_device_name()}")
    mamba = importlib.util.find_spec("mamba_ssm") is not None
    print(f"mamba_ssm installed: {mamba}" + ("" if mamba else " (no comparison with its kernel)"))
    scan_sizes = SCAN_SIZES[:2] if args.quick else SCAN_SIZES
    matmul_sizes = MATMUL_SIZES[:2] if args.quick else MATMUL_SIZES
    for tf32 in (False, True):
        torch.backends.cuda.matmul.allow_tf32 = tf32
        bench_scan("cuda", args.reps, scan_sizes, args.chunk)
    torch.backends.cuda.matmul.allow_tf32 = False
    bench_full_op("cuda", args.reps, SCAN_SIZES[1], args.chunk)
    bench_bitlinear("cuda", args.reps, matmul_sizes)


if __name__ == "__main__":
    main()
