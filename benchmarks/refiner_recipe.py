"""The worked-steps refiner recipe of STACK-NOTES, reproduced in a plain loop, and the stage's path beside it.

A copy of the coarse model learns one family's worked steps on fresh gold items (`fresh_records`, the
stage's generator: never a val/test prompt), loss on the target only, batch 16, lr 1e-3, AdamW, grad clip
1.0, one thread; then greedy exact match on the test split's items of that family, per difficulty. Each
option is one difference between the STACK-NOTES study and the `refiner` stage, so runs bisect the gap:

* `--loop torch` (this file's loop) or `sft` (the library's `train_sft`: TRL SFTTrainer, curriculum sampler)
* `--input plain` (`15*23=` then the steps) or `markers` (`15*23=[COARSE][REFINE]`, the stage's input)
* `--schedule cosine | wsd` (warmup then cosine to 0, or warmup-stable-linear decay over `--decay` of the run)
* `--levels 2` or `1,2` (difficulty levels of the fresh items), `--steps`, `--seed`, `--threads`

Prints one JSON line: settings, steps/s, seconds, and test EM per level. Asserts nothing.

    PYTHONPATH=src python benchmarks/refiner_recipe.py --family mul --levels 2 --steps 2000
"""

from __future__ import annotations

import argparse
import json
import math
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerBase

from cascadelab.cascade.formatting import refiner_input
from cascadelab.config import CurriculumParams, RefinerFormatSettings, SFTTrainParams
from cascadelab.data.batches import collate_rows, encode_prompt_response
from cascadelab.data.corpus import load_split
from cascadelab.data.held_out import final_evaluation
from cascadelab.data.tasks import get_family
from cascadelab.data.tokenizer import load_tokenizer
from cascadelab.eval.generation import generate_batched
from cascadelab.training.refiner_trainer import fresh_records
from cascadelab.training.sft import train_sft

Record = dict[str, Any]


def lr_factor(step: int, steps: int, warmup: int, schedule: str, decay: float) -> float:
    """Learning-rate multiplier at `step`: linear warmup, then cosine to 0 or stable + linear decay."""
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))
    decay_steps = max(1, int(steps * decay))
    return min(1.0, (steps - step) / decay_steps)


def train_torch(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    rows: list[Record],
    args: argparse.Namespace,
    evaluate: Callable[[int], None],
) -> None:
    """The minimal loop: random batches of `rows`, right padding, loss on the target tokens only."""
    encoded = encode_prompt_response(tokenizer, [r["prompt"] for r in rows], [r["target"] for r in rows])
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    rng = random.Random(args.seed)
    pad = int(tokenizer.pad_token_id or 0)
    model.train()
    for step in range(args.steps):
        for group in optimizer.param_groups:
            group["lr"] = args.lr * lr_factor(step, args.steps, args.warmup, args.schedule, args.decay)
        batch = [rng.randrange(len(rows)) for _ in range(args.batch_size)]
        loss = model(**collate_rows([encoded[i] for i in batch], pad)).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if step % 250 == 0:
            print(f"step {step} loss {loss.item():.4f}", flush=True)
        if args.eval_every and (step + 1) % args.eval_every == 0 and step + 1 < args.steps:
            evaluate(step + 1)
            model.train()


def train_library(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    rows: list[Record],
    args: argparse.Namespace,
    evaluate: Callable[[int], None],
) -> None:
    """The stage's path: `train_sft` (TRL SFTTrainer, WSD schedule, one family per batch)."""
    train = SFTTrainParams(
        max_steps=args.steps,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        warmup_steps=args.warmup,
        decay_fraction=args.decay,
        weight_decay=0.0,
        max_grad_norm=1.0,
        logging_steps=250,
        save_steps=0,
        num_threads=args.threads,
    )
    with tempfile.TemporaryDirectory() as tmp:
        train_sft(
            model,
            tokenizer,
            rows,
            train,
            CurriculumParams(warmup_tasks=[]),
            {args.family: 1.0},
            args.seed,
            Path(tmp),
            report_to=(),
            target_field="target",
        )


def main() -> None:
    """Train one refiner configuration and print its speed and test exact match."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", default="mul")
    parser.add_argument("--levels", default="2")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--schedule", choices=["cosine", "wsd"], default="cosine")
    parser.add_argument("--decay", type=float, default=0.5, help="wsd: decayed share of the run")
    parser.add_argument("--input", choices=["plain", "markers"], default="plain")
    parser.add_argument("--loop", choices=["torch", "sft"], default="torch")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--eval-every", type=int, default=0, help="torch loop: also print test EM every N steps")
    parser.add_argument("--coarse", default="models/coarse")
    parser.add_argument("--corpus", default="data/corpus")
    parser.add_argument("--tokenizer", default="data/tokenizer")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    tokenizer = load_tokenizer(args.tokenizer)
    levels = [int(x) for x in args.levels.split(",")]
    with final_evaluation("refiner_recipe"):
        test = [r for r in load_split(args.corpus, "test") if r["task"] == args.family and r["difficulty"] in levels]
    val = [r for r in load_split(args.corpus, "val") if r["task"] == args.family]
    items = fresh_records({args.family: levels}, 20000, args.seed, exclude_prompts=[r["prompt"] for r in test + val])
    fmt = RefinerFormatSettings()

    def source(prompt: str) -> str:
        return prompt if args.input == "plain" else refiner_input(prompt, None, fmt)

    rows = [{**r, "prompt": source(r["prompt"]), "target": r["steps"]} for r in items]
    model = AutoModelForCausalLM.from_pretrained(args.coarse)
    family = get_family(args.family)

    def test_em() -> dict[str, float]:
        model.eval()
        outputs = generate_batched(model, tokenizer, [source(r["prompt"]) for r in test], 48)
        em: dict[str, float] = {}
        for level in levels:
            hits = [
                family.verify(o[0], r["answer"]) for r, o in zip(test, outputs, strict=True) if r["difficulty"] == level
            ]
            em[f"em_{args.family}{level}"] = round(100.0 * sum(hits) / len(hits), 1)
        return em

    def evaluate(step: int) -> None:
        print(json.dumps({"step": step, **test_em()}), flush=True)

    started = time.perf_counter()
    (train_torch if args.loop == "torch" else train_library)(model, tokenizer, rows, args, evaluate)
    seconds = time.perf_counter() - started
    result: dict[str, Any] = {k: v for k, v in vars(args).items() if k not in ("coarse", "corpus", "tokenizer")}
    result.update(
        {"rows": len(rows), "train_seconds": round(seconds, 1), "steps_per_s": round(args.steps / seconds, 2)}
    )
    result.update(test_em())
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
