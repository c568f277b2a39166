"""Draft heads on a tiny frozen Llama: acceptance rate, tokens per forward and decode speed-up vs plain greedy.

Both decoders run full forwards without a KV cache (the speculative loop's form), on the same prompts in
one process; heads are measured untrained (identity init) and after self-distillation on the model's own
greedy continuations. Prints numbers; never passes or fails on them.

    PYTHONPATH=src python benchmarks/bench_draft_heads.py [--heads 3] [--new 32] [--threads 1]
"""

from __future__ import annotations

import argparse
import random
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from cascadelab.models.draft_heads import DraftHeads, SpeculativeStats, draft_loss, plain_greedy, speculative_greedy


def _prompts(count: int, seed: int, vocab: int) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(vocab) for _ in range(rng.randint(2, 6))] for _ in range(count)]


def _measure(model: LlamaForCausalLM, heads: DraftHeads, prompts: list[list[int]], new: int) -> dict[str, float]:
    stats = SpeculativeStats()
    start = time.perf_counter()
    outputs = [speculative_greedy(model, heads, p, new, stats=stats) for p in prompts]
    speculative_s = time.perf_counter() - start
    start = time.perf_counter()
    reference = [plain_greedy(model, p, new) for p in prompts]
    plain_s = time.perf_counter() - start
    return {
        "identical": float(outputs == reference),
        "acceptance": stats.acceptance_rate,
        "tokens_per_forward": stats.tokens_per_forward,
        "speedup": plain_s / speculative_s,
    }


def main() -> None:
    """Run the measurement and print one line per head state."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--heads", type=int, default=3)
    parser.add_argument("--new", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
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
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    heads = DraftHeads.for_model(model, args.heads)
    held_out = _prompts(16, seed=5, vocab=config.vocab_size)
    print("untrained", _measure(model, heads, held_out, args.new))
    sequences = [p + plain_greedy(model, p, args.new) for p in _prompts(64, seed=1, vocab=config.vocab_size)]
    width = min(len(s) for s in sequences)
    batch = torch.tensor([s[:width] for s in sequences])
    optimizer = torch.optim.AdamW(heads.parameters(), lr=3e-3)
    for _ in range(200):
        optimizer.zero_grad()
        draft_loss(model, heads, batch).backward()
        optimizer.step()
    print("trained  ", _measure(model, heads, held_out, args.new))


if __name__ == "__main__":
    main()
