"""Speed of the fused GNProx update (Triton) against its PyTorch reference, as ratios measured in one run.

    PYTHONPATH=src python benchmarks/bench_gnprox_kernel.py     # on a CUDA machine

For several parameter sizes, times one in-place GNProx step (momentum, optional curvature refresh,
clipped proximal update) with each path on the same tensors and prints the median milliseconds and
reference/kernel. Without CUDA it says so and times the reference alone.
"""

from __future__ import annotations

import argparse
from functools import partial

import torch

from cascadelab.kernels.gnprox_update import GNProxStep, gnprox_update_ref, gnprox_update_triton
from cascadelab.kernels.timing import median_ms

SIZES = [2**16, 2**20, 2**22, 2**24, 2**26]


def main() -> None:
    """Time both paths at each size and print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=20)
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"torch {torch.__version__}, device {torch.cuda.get_device_name() if device == 'cuda' else 'cpu'}")
    if device == "cpu":
        print("the Triton path needs CUDA; timing the reference only")
    print(f"{'numel':>10} {'refresh':>8} {'ref ms':>9} {'triton ms':>10} {'ref/triton':>11}")
    gen = torch.Generator().manual_seed(0)
    sizes = SIZES if device == "cuda" else SIZES[:3]
    for numel in sizes:
        p, g, m = (torch.randn(numel, generator=gen).to(device) for _ in range(3))
        h = torch.rand(numel, generator=gen).to(device) * 1e-2
        for refresh in (False, True):
            step = GNProxStep(1e-3, 0.9, 0.99, 0.05, 1e-12, 0.0, refresh)
            ref = median_ms(partial(gnprox_update_ref, p, g, m, h, step), device, args.reps)
            if device == "cuda":
                tri = median_ms(partial(gnprox_update_triton, p, g, m, h, step), device, args.reps)
                print(f"{numel:>10} {refresh!s:>8} {ref:9.3f} {tri:10.3f} {ref / tri:10.1f}x")
            else:
                print(f"{numel:>10} {refresh!s:>8} {ref:9.3f} {'-':>10} {'-':>11}")


if __name__ == "__main__":
    main()
