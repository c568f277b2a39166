"""Measure the ACOC issue's bars at default settings: grown model vs the two static baselines.

Builds the default corpus cells the ACOC schedule uses, trains ACOC and both baselines on the same batches
and prints per-model exact match, perplexity, parameters, parameter-steps, forgetting and timings, then
the bars. Prints numbers; never passes or fails on them.

    python benchmarks/acoc_bars.py [--seed 1234] [--threads 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from cascadelab.config import ACOCParams, PrepareParams, TokenizerParams
from cascadelab.data.corpus import CorpusVerifier, build_splits, iter_texts
from cascadelab.data.task_streams import build_task_batches
from cascadelab.data.tokenizer import train_tokenizer
from cascadelab.training.acoc_trainer import bars, comparison, run_acoc

COLUMNS = ("model", "em", "ppl", "params", "parameter_steps", "forgetting", "train_cpu_seconds", "run_seconds")


def main() -> None:
    """Run the measurement and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default=None, help="also write history, events and rows here")
    args = parser.parse_args()
    started = time.perf_counter()
    settings = ACOCParams(num_threads=args.threads)
    torch.set_num_threads(args.threads)
    families = {"add": {"difficulties": [2]}, "sub": {"difficulties": [2]}}
    splits = build_splits(PrepareParams(families=families), args.seed)
    tokenizer = train_tokenizer(iter_texts(splits["train"]), TokenizerParams())
    verifier = CorpusVerifier({"answer_format": "reversed"})
    keys = list(settings.tasks)
    train = build_task_batches(splits["train"], tokenizer, keys, settings.batch_size)
    val = build_task_batches(splits["val"], tokenizer, keys, 128, limit_per_task=settings.val_items_per_task)
    result = run_acoc(settings, train, val, splits["test"], tokenizer, verifier.verify, seed=args.seed)
    rows = comparison(result)
    tasks = [f"em_{task}" for task in keys]
    print("\t".join([*COLUMNS, *tasks]))
    for row in rows:
        print("\t".join(f"{row.get(c, float('nan')):.4g}" if c != "model" else row[c] for c in (*COLUMNS, *tasks)))
    for key, value in bars(result).items():
        print(f"{key}: {value}")
    print(f"total wall seconds (data + 3 models + evaluation): {time.perf_counter() - started:.1f}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(
                {"history": result.history, "events": result.events, "rows": rows, "bars": bars(result)},
                handle,
                default=str,
            )


if __name__ == "__main__":
    main()
