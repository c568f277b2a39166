"""Coarse SFT training throughput on this machine as a share of its measured matmul peak (MFU).

Runs the real `coarse_sft` training path (TRL SFTTrainer, default model and batch params) for a short
number of steps on the prepared corpus, counts non-padding training tokens per second, converts them
to model FLOP/s (6·N per token plus attention), and divides by the fp32 matmul peak measured in the
same process with the same thread count. Prints the ratio; asserts nothing.

    PYTHONPATH=src python benchmarks/bench_coarse_mfu.py [--steps 300]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from cascadelab.config import load_params
from cascadelab.data.corpus import load_split
from cascadelab.data.tokenizer import load_tokenizer
from cascadelab.models.coarse import build_causal_lm
from cascadelab.models.utils import count_parameters
from cascadelab.training.sft import train_sft


def matmul_peak_flops(size: int = 1024, repeats: int = 20) -> float:
    """Best-of fp32 matmul FLOP/s at the current thread count."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def main() -> None:
    """Measure and print MFU of coarse SFT."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--corpus", default="data/corpus")
    parser.add_argument("--tokenizer", default="data/tokenizer")
    args = parser.parse_args()
    params = load_params().coarse_sft
    torch.set_num_threads(params.train.num_threads)
    peak = matmul_peak_flops()
    tokenizer = load_tokenizer(args.tokenizer)
    records = load_split(args.corpus, "train")
    torch.manual_seed(0)
    model = build_causal_lm(params.model.to_config(tokenizer))
    train = params.train.model_copy(update={"max_steps": args.steps})
    curriculum = params.curriculum.model_copy(update={"warmup_tasks": []})  # measure the full mix
    with tempfile.TemporaryDirectory() as scratch:
        _, result = train_sft(model, tokenizer, records, train, curriculum, params.mix, 0, Path(scratch), report_to=())
    n_params = count_parameters(model)
    cfg = params.model
    mean_len = result.train_tokens / (args.steps * train.batch_size)
    flops_per_token = 6 * n_params + 12 * cfg.num_layers * cfg.hidden_size * mean_len
    model_flops = result.tokens_per_second * flops_per_token
    print(f"threads                 {torch.get_num_threads()}")
    print(f"fp32 matmul peak        {peak / 1e9:8.1f} GFLOP/s (1024^3, best of 20)")
    print(f"model params            {n_params}")
    print(
        f"training tokens/s       {result.tokens_per_second:8.0f} (non-padding, {args.steps} steps, "
        f"batch {train.batch_size}, mean {mean_len:.1f} tokens)"
    )
    print(f"steps/s                 {args.steps / result.train_seconds:8.1f}")
    print(f"model FLOP/s            {model_flops / 1e9:8.2f} GFLOP/s")
    print(f"MFU (model / peak)      {model_flops / peak:8.3f}")


if __name__ == "__main__":
    main()
