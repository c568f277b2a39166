"""Dynamic int8 vs fp32 hybrid RNN-Transformer on CPU: greedy decoding speed, exact match and loss.

    python benchmarks/bench_hybrid_rnn_int8.py --model-dir models/hybrid_rnn --records data/test.jsonl
    python benchmarks/bench_hybrid_rnn_int8.py     # self-contained: trains a model on 2-digit sums first
    python benchmarks/bench_hybrid_rnn_int8.py --preset seed --train-steps 0   # speed only, random weights

With `--model-dir` the model (and its tokenizer, unless `--tokenizer-dir` says otherwise) is loaded with
`from_pretrained`, and `--records` is a JSONL of corpus records (`task`, `prompt`, `response`, `answer`).
Without it, a model of `--preset` is trained `--train-steps` steps on 2-digit additions with a character
tokenizer, so the comparison is made on a model that has learned something (`--train-steps 0` skips
training: the speed ratio still holds, the accuracy columns then mean nothing). Exact match here is the
decoded output equal to the `response` text. Both variants run in this one process, interleaved, and the
best of `--repeats` timings counts; the ratio is the number to read, not the absolute speed.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path
from typing import Any

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

from cascadelab.config import HybridRNNTrainParams
from cascadelab.eval.seq2seq import Seq2SeqEvalResult, evaluate_seq2seq
from cascadelab.models.hybrid_rnn import HybridRNNConfig, HybridRNNTransformer
from cascadelab.models.hybrid_rnn.quantization import quantize_dynamic_int8
from cascadelab.training.hybrid_rnn_trainer import train_hybrid_rnn


def char_tokenizer() -> PreTrainedTokenizerFast:
    """Character-level tokenizer over digits and arithmetic signs, with [PAD]/[BOS]/[EOS]/[UNK]."""
    specials = ["[PAD]", "[BOS]", "[EOS]", "[UNK]"]
    vocab = {token: i for i, token in enumerate([*specials, *"0123456789+-*="])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), "isolated")
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="[PAD]", bos_token="[BOS]", eos_token="[EOS]", unk_token="[UNK]"
    )


def addition_records(n: int, seed: int) -> list[dict[str, Any]]:
    """2-digit addition records in the corpus' shape."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        out.append({"id": f"add-{i}", "task": "add", "prompt": f"{a}+{b}=", "response": str(a + b)})
        out[-1]["answer"] = out[-1]["response"]
    return out


def build_model(args: argparse.Namespace) -> tuple[HybridRNNTransformer, PreTrainedTokenizerBase, list[dict]]:
    """Load the model and records named on the command line, or train a quick one on additions."""
    if args.model_dir is not None:
        model = AutoModelForSeq2SeqLM.from_pretrained(args.model_dir).eval()
        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer_dir or args.model_dir)
        if args.records is None:
            raise SystemExit("--model-dir needs --records (a JSONL of corpus records)")
        lines = Path(args.records).read_text().splitlines()
        return model, tokenizer, [json.loads(line) for line in lines if line.strip()][: args.n]
    tokenizer = char_tokenizer()
    config = HybridRNNConfig.from_preset(args.preset, vocab_size=len(tokenizer))
    torch.manual_seed(args.seed)
    model = HybridRNNTransformer(config)
    train = [(r["prompt"], r["response"]) for r in addition_records(20000, args.seed)]
    val = [(r["prompt"], r["response"]) for r in addition_records(128, args.seed + 1)]
    settings = HybridRNNTrainParams(
        learning_rate=2e-3,
        batch_size=32,
        max_steps=max(1, args.train_steps),
        eval_steps=max(1, args.train_steps // 4),
        patience=5,
        eval_batch_size=128,
    )
    if args.train_steps > 0:
        start = time.perf_counter()
        result = train_hybrid_rnn(model, train, val, tokenizer, settings, seed=args.seed)
        seconds = time.perf_counter() - start
        print(f"trained {result.steps} steps in {seconds:.1f} s, best val loss {result.best_val_loss:.3f}")
    model.eval()
    return model, tokenizer, addition_records(args.n, args.seed + 2)


def best_of(model: Any, tokenizer: Any, records: list[dict], args: argparse.Namespace) -> Seq2SeqEvalResult:
    """One greedy evaluation; callers keep the fastest of several."""
    return evaluate_seq2seq(
        model, tokenizer, records, "greedy", lambda task, out, ans: out == ans, batch_size=args.batch_size
    )


def main() -> None:
    """Parse arguments, measure both variants, print the table and the ratios."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path)
    parser.add_argument("--tokenizer-dir", type=Path)
    parser.add_argument("--records", type=Path)
    parser.add_argument("--preset", default="small", choices=["tiny", "small", "seed"])
    parser.add_argument("--train-steps", type=int, default=600)
    parser.add_argument("--n", type=int, default=512, help="records to evaluate")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model, tokenizer, records = build_model(args)
    for record in records:
        record["answer"] = record["response"]  # exact match on the response text, no task verifier here
    quantized = quantize_dynamic_int8(model)
    runs: dict[str, list[Seq2SeqEvalResult]] = {"fp32": [], "int8": []}
    for _ in range(args.repeats):
        for name, variant in (("fp32", model), ("int8", quantized)):
            runs[name].append(best_of(variant, tokenizer, records, args))
    fp32 = min(runs["fp32"], key=lambda r: r.seconds)
    int8 = min(runs["int8"], key=lambda r: r.seconds)
    agree = sum(a == b for a, b in zip(fp32.predictions, int8.predictions, strict=True)) / len(records)

    print(f"{len(records)} records, batch {args.batch_size}, {args.threads} thread(s), best of {args.repeats}")
    print(f"{'variant':8} {'seconds':>8} {'tokens/s':>9} {'exact match':>12} {'loss':>7}")
    for name, r in (("fp32", fp32), ("int8", int8)):
        loss = math.log(r.perplexity)
        print(f"{name:8} {r.seconds:8.3f} {r.tokens_per_s:9.0f} {100 * r.exact_match:11.1f}% {loss:7.4f}")
    print(f"speed-up int8/fp32: {fp32.seconds / int8.seconds:.2f}x")
    print(f"exact match change: {100 * (int8.exact_match - fp32.exact_match):+.1f} points")
    print(f"loss change: {math.log(int8.perplexity) - math.log(fp32.perplexity):+.4f} nats/token")
    print(f"greedy outputs identical: {100 * agree:.1f}%")


if __name__ == "__main__":
    main()
