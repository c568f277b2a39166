"""Training-step cost of the sigma_pretrain models at the default params, as ratios to the Llama baseline.

Runs the stage's own loop (SigmaTrainer) on the stage's own batches for: the Llama baseline, SigmaLLM
(INSTANT chunked loss only), SigmaLLM with INSTANT block checkpointing, and SigmaLLM with the Muon +
AdamW pair. Configurations are interleaved in rounds so that they share the machine's load; prints
wall and CPU milliseconds per step (median over rounds), ratios to the baseline, and the load average.

    PYTHONPATH=src python benchmarks/bench_sigma_pretrain.py [--steps 100] [--rounds 3] [--threads N]

On a shared machine the CPU milliseconds are the steadier figure: with one thread they approximate the
idle single-thread step time.

Uses data/corpus and data/tokenizer (run `dvc repro prepare` first).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from cascadelab.config import InstantParams, SigmaOptimizerParams, load_params
from cascadelab.data.corpus import load_split
from cascadelab.data.mixed_batches import TokenizedRows, mixed_batches
from cascadelab.data.tokenizer import load_tokenizer
from cascadelab.models.coarse import build_causal_lm
from cascadelab.pipeline.sigma_pretrain import build_sigma_lm
from cascadelab.training.optimizers.factory import build_optimizers
from cascadelab.training.sigma_loop import SigmaTrainer


def main() -> None:
    """Measure and print the per-step table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100, help="measured steps per configuration and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None, help="default: sigma_pretrain.train.num_threads")
    args = parser.parse_args()
    import torch  # after cascadelab, which sets OMP_WAIT_POLICY before torch loads OpenMP

    params = load_params().sigma_pretrain
    threads = args.threads or params.train.num_threads
    torch.set_num_threads(threads)
    tokenizer = load_tokenizer("data/tokenizer")
    rows = TokenizedRows(tokenizer, load_split("data/corpus", "train"))
    muon = SigmaOptimizerParams(name="muon", muon=params.optimizer.muon)
    configs = {
        "llama baseline": (
            lambda: build_causal_lm(params.baseline.to_config(tokenizer)),
            params.optimizer,
            params.instant,
        ),
        "sigma (chunked CE)": (
            lambda: build_sigma_lm(params.model, tokenizer),
            params.optimizer,
            InstantParams(chunk_size=params.instant.chunk_size, checkpoint_blocks=False),
        ),
        "sigma + block ckpt": (
            lambda: build_sigma_lm(params.model, tokenizer),
            params.optimizer,
            InstantParams(chunk_size=params.instant.chunk_size, checkpoint_blocks=True),
        ),
        "sigma + muon": (
            lambda: build_sigma_lm(params.model, tokenizer),
            muon,
            InstantParams(chunk_size=params.instant.chunk_size, checkpoint_blocks=False),
        ),
    }
    state = {}
    for name, (build, optimizer, instant) in configs.items():
        torch.manual_seed(0)
        model = build()
        state[name] = (model, build_optimizers(model, optimizer), instant)
    wall: dict[str, list[float]] = {name: [] for name in configs}
    cpu: dict[str, list[float]] = {name: [] for name in configs}
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:

        def fit(name: str, steps: int, seed: int) -> tuple[float, float]:
            model, optimizers, instant = state[name]
            train = params.train.model_copy(update={"max_steps": steps, "logging_steps": steps, "eval_steps": 0})
            trainer = SigmaTrainer(model, optimizers, train, Path(tmp), instant=instant)
            batches = mixed_batches(rows, params.mix, steps, train.batch_size, seed)
            started_cpu = time.process_time()
            row = trainer.fit(batches).history[-1]
            seconds = sum(row[f"phase_{p}_s"] for p in ("data", "forward", "backward", "optimizer"))
            return 1000 * seconds / steps, 1000 * (time.process_time() - started_cpu) / steps

        for name in configs:
            fit(name, args.warmup, seed=-1)
        for round_index in range(args.rounds):
            for name in configs:
                w, c = fit(name, args.steps, seed=round_index)
                wall[name].append(w)
                cpu[name].append(c)
    load_after = os.getloadavg()[0]
    base_wall, base_cpu = statistics.median(wall["llama baseline"]), statistics.median(cpu["llama baseline"])
    print(f"{threads} threads, batch {params.train.batch_size}, {args.steps} steps x {args.rounds} rounds")
    print(f"load average (1 min): {load_before:.2f} before, {load_after:.2f} after")
    print(f"{'configuration':22s} {'wall ms/step':>13s} {'x baseline':>10s} {'cpu ms/step':>12s} {'x baseline':>10s}")
    for name in configs:
        w, c = statistics.median(wall[name]), statistics.median(cpu[name])
        print(f"{name:22s} {w:13.1f} {w / base_wall:10.2f} {c:12.1f} {c / base_cpu:10.2f}")


if __name__ == "__main__":
    main()
