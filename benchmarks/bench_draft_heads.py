"""Draft heads: acceptance rate, tokens per forward and decode speed-up vs plain greedy, with identical output.

Both decoders run full forwards without a KV cache (the speculative loop's form), on the same prompts in
one process. Without ``--model-dir``: a tiny random Llama, heads measured untrained (identity init) and
after self-distillation on its own greedy continuations. With ``--model-dir`` (e.g. ``models/sigma``, the
trained SigmaLLM with its tokenizer): heads trained on the frozen model's greedy answers to corpus train
prompts (loss on the answer tokens only, unless ``--all-positions``), measured on corpus test
prompts. Prints numbers; never passes or fails on them.

    PYTHONPATH=src python benchmarks/bench_draft_heads.py [--heads 3] [--new 32] [--threads 1]
    PYTHONPATH=src python benchmarks/bench_draft_heads.py --model-dir models/sigma --corpus data/corpus
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections import defaultdict
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, PreTrainedModel

import cascadelab.models.sigma  # noqa: F401  (registers SigmaForCausalLM with the Auto classes)
from cascadelab.data.corpus import load_split
from cascadelab.data.tokenizer import load_tokenizer
from cascadelab.models.draft_heads import DraftHeads, measure_speculative, plain_greedy
from cascadelab.training.draft_heads import train_draft_heads


def _random_prompts(count: int, seed: int, vocab: int) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(vocab) for _ in range(rng.randint(2, 6))] for _ in range(count)]


def _show(label: str, report: dict[str, object]) -> None:
    keys = ("identical", "mismatches", "acceptance_rate", "tokens_per_forward", "speedup", "tokens", "prompts")
    print(label, json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in report.items() if k in keys}))


def _length_batches(
    sequences: list[list[int]], prompt_lengths: list[int], batch_size: int
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Batches of equal-length sequences (no padding: `draft_loss` takes no attention mask) and their
    completion masks (True on the tokens after the prompt: the only ones decoding drafts)."""
    by_length: dict[int, list[tuple[list[int], int]]] = defaultdict(list)
    for sequence, prompt_length in zip(sequences, prompt_lengths, strict=True):
        if len(sequence) > 2:
            by_length[len(sequence)].append((sequence, prompt_length))
    batches, masks = [], []
    for length, group in sorted(by_length.items()):
        for start in range(0, len(group), batch_size):
            chunk = group[start : start + batch_size]
            batches.append(torch.tensor([sequence for sequence, _ in chunk]))
            masks.append(torch.tensor([[i >= n for i in range(length)] for _, n in chunk]))
    return batches, masks


def _random_model(args: argparse.Namespace) -> None:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=48,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=4,
        initializer_range=0.2,
    )
    model = LlamaForCausalLM(config).eval()
    heads = DraftHeads.for_model(model, args.heads)
    held_out = _random_prompts(16, seed=5, vocab=config.vocab_size)
    _show("untrained", measure_speculative(model, heads, held_out, args.new))
    sequences = [p + plain_greedy(model, p, args.new) for p in _random_prompts(64, seed=1, vocab=config.vocab_size)]
    width = min(len(s) for s in sequences)
    train_draft_heads(model, heads, [torch.tensor([s[:width] for s in sequences])], steps=200, lr=3e-3, seed=0)
    _show("trained  ", measure_speculative(model, heads, held_out, args.new))


def _trained_model(args: argparse.Namespace) -> None:
    tokenizer = load_tokenizer(args.model_dir)
    model: PreTrainedModel = AutoModelForCausalLM.from_pretrained(str(args.model_dir)).eval()
    eos = tokenizer.eos_token_id
    rng = random.Random(args.seed)

    def prompts(split: str, count: int) -> list[list[int]]:
        records = load_split(args.corpus, split)
        rng.shuffle(records)
        texts = [r["prompt"] for r in records[:count]]
        return [list(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]

    train_prompts, test_prompts = prompts("train", args.train_prompts), prompts("test", args.eval_prompts)
    start = time.perf_counter()
    sequences = [p + plain_greedy(model, p, args.new, eos) for p in train_prompts]
    distill_s = time.perf_counter() - start
    heads = DraftHeads.for_model(model, args.heads)
    _show("untrained", measure_speculative(model, heads, test_prompts, args.new, eos))
    start = time.perf_counter()
    batches, masks = _length_batches(sequences, [len(p) for p in train_prompts], 32)
    targets = None if args.all_positions else masks
    losses = train_draft_heads(model, heads, batches, args.steps, args.lr, args.seed, target_masks=targets)
    train_s = time.perf_counter() - start
    print(
        f"heads {args.heads} ({'all positions' if args.all_positions else 'completion targets'}): "
        f"distilled {len(sequences)} train prompts in {distill_s:.1f} s, "
        f"{args.steps} steps in {train_s:.1f} s, draft loss {losses[0]:.3f} -> {losses[-1]:.3f}"
    )
    _show("trained  ", measure_speculative(model, heads, test_prompts, args.new, eos))


def main() -> None:
    """Run the measurement and print one line per head state."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--heads", type=int, default=3)
    parser.add_argument("--new", type=int, default=32, help="max new tokens (EOS stops earlier with --model-dir)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--model-dir", type=Path, default=None, help="a trained causal LM with its tokenizer")
    parser.add_argument("--corpus", type=Path, default=Path("data/corpus"))
    parser.add_argument("--train-prompts", type=int, default=512)
    parser.add_argument("--eval-prompts", type=int, default=200)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--all-positions", action="store_true", help="train on prompt targets too")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.model_dir is None:
        _random_model(args)
    else:
        _trained_model(args)


if __name__ == "__main__":
    main()
