"""Tokens/s of LEGO routed inference vs full-depth inference, measured in one run.

Without ``--model-dir``: builds a default-size LEGO model (2 causal layers + 2 token-wise layers,
hidden 128) with random upper weights and a standard 4-layer causal model of the same width, picks
the routing threshold that exits the requested share of tokens, and times teacher-forced passes
over one random batch.

With ``--model-dir models/lego`` (the ``lego_phase2`` stage's model): times it on the test split of
``--corpus-dir`` (right-padded batches of one task cell), routed at its own calibrated threshold
(or at ``--exit-share``), against the same model at full depth and, when ``--baseline-dir`` exists
(``models/lego_baseline``), the stage's full-depth baseline.

Every position of every sequence is routed (as in generation), so ``compute_cost`` (counted FLOPs
per token over full depth's, upper-layer key/value projections of exited tokens included) is over the
same tokens the timer sees. Prints tokens/s, the speed ratios and ``compute_cost``, which the routed /
full-depth time ratio should track. With ``--model-dir`` it also times greedy generation (KV cache) on
the first ``--gen-items`` test prompts, routed vs full depth: the wall-time ratio the issue asks for.

    python benchmarks/lego_routing_speed.py --threads 1 --exit-share 0.5
    PYTHONPATH=src python benchmarks/lego_routing_speed.py --model-dir models/lego --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import cascadelab  # noqa: F401  (first: sets OMP_WAIT_POLICY=PASSIVE before torch loads OpenMP)

# isort: split
import torch

from cascadelab.models.lego import LEGOConfig, LEGOTransformer, build_lego_model
from cascadelab.models.lego.calibration import threshold_for_ratio

Batch = dict[str, torch.Tensor]


def timed(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median wall time of each function, run round-robin (so machine-load drift hits all alike)."""
    for fn in fns.values():
        fn()
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def synthetic_models(exit_share: float, batch: int, seq: int) -> tuple[LEGOTransformer, LEGOTransformer, list[Batch]]:
    """A LEGO model with random upper weights routed at ``exit_share``, a 4-layer causal model, one batch."""
    config = LEGOConfig(vocab_size=74, hidden_size=128, intermediate_size=512, num_attention_heads=4)
    lego = LEGOTransformer.extend_from(build_lego_model(config, seed=0), 4, freeze_lower=False, seed=1)
    with torch.no_grad():  # random upper weights: the benchmark measures cost, not quality
        for p in lego.model.layers[2:].parameters():
            p.normal_(0.0, 0.06, generator=torch.Generator().manual_seed(p.numel()))
    full = build_lego_model(config.derive(num_hidden_layers=4, exit_layers=[4], exit_layer=4), seed=2)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 74, (batch, seq), generator=gen)
    with torch.no_grad():
        conf = torch.softmax(lego.forward_all_layers(ids, layers=[2])[0].float(), -1).amax(-1)
    lego.config.routing_threshold = threshold_for_ratio(conf, 1.0 - exit_share)
    return lego, full, [{"input_ids": ids, "attention_mask": torch.ones_like(ids)}]


def generation_ratio(args: argparse.Namespace, lego: LEGOTransformer) -> None:
    """Print the greedy-generation wall time of the model routed and at full depth (median of rounds)."""
    from cascadelab.data.corpus import load_split
    from cascadelab.data.held_out import final_evaluation
    from cascadelab.data.tokenizer import load_tokenizer
    from cascadelab.eval.generation import greedy_outputs

    tokenizer = load_tokenizer(args.model_dir)
    with final_evaluation("lego_routing_speed"):
        prompts = [r["prompt"] for r in load_split(args.corpus_dir, "test")][: args.gen_items]
    lego.eval()
    variants: dict[str, Callable[[], object]] = {
        "generate routed": lambda: greedy_outputs(lego, tokenizer, prompts, args.max_new, args.batch, routed=True),
        "generate full depth": lambda: greedy_outputs(lego, tokenizer, prompts, args.max_new, args.batch),
    }
    t = timed(variants, max(args.repeats // 10, 3))
    for name, seconds in t.items():
        print(f"{name:20s} {seconds:.3f} s for {len(prompts)} prompts x {args.max_new} new tokens")
    print(f"routed / full-depth generation time  {t['generate routed'] / t['generate full depth']:.3f}")


def stage_models(args: argparse.Namespace) -> tuple[LEGOTransformer, LEGOTransformer | None, list[Batch]]:
    """The stage's LEGO model (and baseline if present) with the test split as batches."""
    from cascadelab.data.cell_batches import CellBatches, encode_records
    from cascadelab.data.corpus import load_split
    from cascadelab.data.held_out import final_evaluation
    from cascadelab.data.tokenizer import load_tokenizer

    lego = LEGOTransformer.from_pretrained(args.model_dir)
    baseline = None
    if args.baseline_dir and Path(args.baseline_dir).is_dir():
        baseline = LEGOTransformer.from_pretrained(args.baseline_dir)
    tokenizer = load_tokenizer(args.model_dir)
    with final_evaluation("lego_routing_speed"):
        items = encode_records(load_split(args.corpus_dir, "test"), tokenizer)
    batches = [
        {"input_ids": b["input_ids"], "attention_mask": b["attention_mask"]}
        for b in CellBatches(items, args.batch, int(tokenizer.pad_token_id))
    ]
    if args.exit_share is not None:
        with torch.no_grad():
            conf = torch.cat(
                [
                    torch.softmax(lego.forward_all_layers(b["input_ids"], b["attention_mask"], layers=[2])[0], -1).amax(
                        -1
                    )[b["attention_mask"].bool()]
                    for b in batches
                ]
            )
        lego.config.routing_threshold = threshold_for_ratio(conf, 1.0 - args.exit_share)
    return lego, baseline, batches


def main() -> None:
    """Run the benchmark and print one line per variant plus the ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", default=None, help="a saved LEGO model (models/lego); default: synthetic")
    parser.add_argument("--baseline-dir", default="models/lego_baseline", help="with --model-dir: baseline model")
    parser.add_argument("--corpus-dir", default="data/corpus", help="with --model-dir: corpus with a test split")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seq", type=int, default=24, help="synthetic mode: sequence length")
    parser.add_argument(
        "--exit-share", type=float, default=None, help="share of tokens exiting at the lower block "
        "(default: 0.5 synthetic, the model's own threshold with --model-dir)"
    )  # fmt: skip
    parser.add_argument("--gen-items", type=int, default=512, help="with --model-dir: test prompts generated")
    parser.add_argument("--max-new", type=int, default=8, help="with --model-dir: new tokens per prompt")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    if args.model_dir is None:
        share = 0.5 if args.exit_share is None else args.exit_share
        lego, baseline, batches = synthetic_models(share, args.batch, args.seq)
    else:
        lego, baseline, batches = stage_models(args)
    batches = [{k: v.to(args.device) for k, v in b.items()} for b in batches]
    lego.to(args.device).eval()
    if baseline is not None:
        baseline.to(args.device).eval()

    def sync() -> None:
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    def over_batches(fn: Callable[[Batch], object]) -> Callable[[], None]:
        def go() -> None:
            with torch.no_grad():
                for b in batches:
                    fn(b)
            sync()

        return go

    with torch.no_grad():
        routed = [lego.forward_inference(b["input_ids"], b["attention_mask"]) for b in batches]
    tokens = sum(int(b["attention_mask"].sum()) for b in batches)
    weights = [int(b["attention_mask"].sum()) for b in batches]
    shallow_ratio = sum(r.shallow_ratio * w for r, w in zip(routed, weights, strict=True)) / tokens
    cost = sum(r.compute_cost * w for r, w in zip(routed, weights, strict=True)) / tokens
    variants: dict[str, Callable[[], None]] = {
        "LEGO routed": over_batches(lambda b: lego.forward_inference(b["input_ids"], b["attention_mask"])),
        "LEGO full depth": over_batches(
            lambda b: lego(input_ids=b["input_ids"], attention_mask=b["attention_mask"], use_cache=False)
        ),
    }
    if baseline is not None:
        variants[f"{baseline.config.depth}-layer causal"] = over_batches(
            lambda b: baseline(input_ids=b["input_ids"], attention_mask=b["attention_mask"], use_cache=False)
        )
    t = timed(variants, args.repeats)

    source = args.model_dir or "synthetic model, random batch"
    print(f"{source}: device {args.device}, threads {args.threads}, {len(batches)} batches, {tokens} tokens")
    print(f"threshold {lego.config.routing_threshold:.4f}  shallow_ratio {shallow_ratio:.3f}  compute_cost {cost:.3f}")
    for name, seconds in t.items():
        print(f"{name:16s} {tokens / seconds:12.0f} tokens/s  ({seconds * 1e3:.2f} ms)")
    ratio = t["LEGO full depth"] / t["LEGO routed"]
    print(f"routed / full-depth tokens/s     {ratio:.3f}  (1 / compute_cost {1 / cost:.3f})")
    print(f"routed / full-depth time         {1 / ratio:.3f}  (compute_cost {cost:.3f})")
    for name in t:
        if name.endswith("causal"):
            print(f"routed / {name} time  {t['LEGO routed'] / t[name]:.3f}")
    if args.model_dir is not None:
        generation_ratio(args, lego)


if __name__ == "__main__":
    main()
