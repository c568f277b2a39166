"""The six optimizers on the same small SigmaLLM: same initial weights, same batches, same steps.

Each optimizer trains a copy of one SigmaLLM (params.yaml's `sigma_pretrain.model`, seeded from the
params seed) through the stage's own loop (SigmaTrainer, WSD schedule scaled to `--steps`) on the
stage's batches, with `sigma_pretrain.optimizer`'s settings and only `name` changed (C3O with its
credit signal on, updated every `optimizer.c3o.credit_interval` steps). Prints the
training loss (mean over each window) at fixed steps, the final validation loss, and wall / CPU
seconds of training.

    PYTHONPATH=src python benchmarks/optimizers.py [--steps 400] [--every 100] [--data data]

Uses <data>/corpus and <data>/tokenizer (run `dvc repro prepare` first).
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path

from cascadelab.config import OPTIMIZER_NAMES, SigmaFeatureParams, load_params
from cascadelab.data.corpus import load_split
from cascadelab.data.mixed_batches import TokenizedRows, mixed_batches
from cascadelab.data.tokenizer import load_tokenizer
from cascadelab.pipeline.sigma_pretrain import build_model
from cascadelab.training.optimizers.factory import build_optimizers
from cascadelab.training.sigma_loop import SigmaTrainer
from cascadelab.training.trainer import mean_loss


def main() -> None:
    """Train one copy per optimizer and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--every", type=int, default=100, help="print the training loss every this many steps")
    parser.add_argument("--data", type=Path, default=Path("data"))
    parser.add_argument("--optimizers", nargs="*", default=list(OPTIMIZER_NAMES))
    args = parser.parse_args()
    import torch  # after cascadelab, which sets OMP_WAIT_POLICY before torch loads OpenMP

    params = load_params()
    section = params.sigma_pretrain
    torch.set_num_threads(section.train.num_threads)
    tokenizer = load_tokenizer(args.data / "tokenizer")
    rows = TokenizedRows(tokenizer, load_split(args.data / "corpus", "train"))
    val = TokenizedRows(tokenizer, load_split(args.data / "corpus", "val")).sequential_batches(
        section.eval.batch_size, limit=section.train.eval_records
    )
    initial = build_model("sigma", section, tokenizer, params.seed)
    train = section.train.model_copy(
        update={"max_steps": args.steps, "logging_steps": args.every, "eval_steps": 0, "warmup_steps": args.steps // 24}
    )
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.optimizers:
            model = copy.deepcopy(initial)
            torch.manual_seed(params.seed)
            settings = section.optimizer.model_copy(update={"name": name})
            trainer = SigmaTrainer(
                model,
                build_optimizers(model, settings),
                train,
                Path(tmp) / name,
                instant=section.instant,
                features=SigmaFeatureParams(c3o_credit=name == "c3o"),  # C3O without its credit would be Muon
                credit_interval=settings.c3o.credit_interval,
            )
            batches = mixed_batches(rows, section.mix, args.steps, train.batch_size, params.seed)
            wall, cpu = time.perf_counter(), time.process_time()
            history = trainer.fit(batches).history
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            results[name] = ([row["loss"] for row in history], mean_loss(model, val), wall, cpu)
            print(f"done {name}: val {results[name][1]:.4f}, {wall:.0f} s", flush=True)
    steps = list(range(args.every, args.steps + 1, args.every))
    print(f"\nSigmaLLM {section.model.preset}, batch {train.batch_size}, {args.steps} steps, seed {params.seed}")
    header = "| optimizer | " + " | ".join(f"loss @{s}" for s in steps) + " | val loss | wall s | cpu s |"
    print(header)
    print("|" + "---|" * (len(steps) + 4))
    for name, (losses, val_loss, wall, cpu) in results.items():
        cells = " | ".join(f"{loss:.4f}" for loss in losses)
        print(f"| {name} | {cells} | {val_loss:.4f} | {wall:.0f} | {cpu:.0f} |")


if __name__ == "__main__":
    main()
