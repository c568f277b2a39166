"""Forgetting beside the growth study: a schedule whose old tasks leave the mix, ACOC against two static sizes.

`acoc_trainer.run_acoc` on prepare's corpus in `data/`: `--old` tasks train from cycle 0, `--new` tasks
arrive at cycle `--arrive` and the old ones then leave the batches entirely (`continual.old_task_share` 0),
so the old tasks can only be kept by what the model retains (ACOC protects its router with EWC + replay and
gives the new family its own expert). Forgetting (Chaudhry et al.): an old task's best val accuracy from the
new task's arrival on, minus its final one, in points; and `old_loss_rise`, the old tasks' mean val loss
at the end minus at the last cycle before the arrival (exact match is near 0 this early in training). Also
reports the router protection's and pruning's events. `em` is greedy exact match on val items (the test
split stays unread). Prints numbers; never passes or fails on them.

    PYTHONPATH=src python benchmarks/acoc_forgetting.py --old add --new mul --arrive 3 --cycles 6 --json out.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from cascadelab.config import load_params
from cascadelab.data.corpus import CorpusVerifier, load_meta, load_split
from cascadelab.data.task_streams import build_task_batches
from cascadelab.data.tokenizer import load_tokenizer
from cascadelab.training.acoc_trainer import comparison, run_acoc

COLUMNS = ("em", "forgetting", "old_loss_rise", "params", "experts_final", "expansions", "prunes", "merges")


def main() -> None:
    """Run ACOC and both static sizes on the old-then-new schedule and print the forgetting of each."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", default="add")
    parser.add_argument("--new", default="mul")
    parser.add_argument("--arrive", type=int, default=3)
    parser.add_argument("--cycles", type=int, default=6)
    parser.add_argument("--steps-per-cycle", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args()
    started = time.perf_counter()
    base = load_params(Path("params.yaml")).acoc
    tasks = {**dict.fromkeys(args.old.split(","), 0), **dict.fromkeys(args.new.split(","), args.arrive)}
    continual = base.continual.model_copy(update={"old_task_share": 0.0})
    settings = base.model_copy(
        update={"tasks": tasks, "cycles": args.cycles, "steps_per_cycle": args.steps_per_cycle, "num_threads": 1,
                "continual": continual, "baselines": True}
    )  # fmt: skip
    settings = type(base).model_validate(settings.model_dump())
    torch.set_num_threads(1)
    corpus, keys = Path("data/corpus"), list(tasks)
    tokenizer = load_tokenizer(Path("data/tokenizer"))
    train = build_task_batches(load_split(corpus, "train"), tokenizer, keys, settings.batch_size)
    val = build_task_batches(
        load_split(corpus, "val"), tokenizer, keys, 128, limit_per_task=settings.val_items_per_task
    )
    held = load_split(corpus, "val")  # test stays unread: `em` here is greedy exact match on val items
    verify = CorpusVerifier(load_meta(corpus)).verify
    result = run_acoc(settings, train, val, held, tokenizer, verify, seed=args.seed)
    rows = comparison(result)
    old = args.old.split(",")
    runs = {"acoc": result.history, **{name: run.history for name, run in result.baselines.items()}}
    for row in rows:  # exact match is near 0 this early, so forgetting is also read on the old tasks' val loss
        history = runs[row["model"]]
        before = history[args.arrive - 1]["val_loss"]
        row["old_loss_rise"] = sum(history[-1]["val_loss"][t] - before[t] for t in old) / len(old)
    for row in rows:
        print(row["model"], {c: round(float(row[c]), 3) for c in COLUMNS if c in row})
    report = {
        "command": " ".join(f"--{k}={v}" for k, v in vars(args).items()),
        "models": {row["model"]: row for row in rows},
        "events": [e for e in result.events if e["type"] in ("new_task", "protect_router", "split", "prune", "merge")],
        "wall_seconds": time.perf_counter() - started,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1, default=str) + "\n")


if __name__ == "__main__":
    main()
