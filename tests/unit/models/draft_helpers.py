"""A tiny frozen Llama, prompts and distilled batches shared by the draft-head tests."""

from __future__ import annotations

import random

import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedModel

from cascadelab.models.draft_heads import plain_greedy


def tiny_llama() -> LlamaForCausalLM:
    """A seeded two-layer Llama with tied embeddings, in eval mode."""
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=48,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=128,
        initializer_range=0.2,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(config).eval()


def prompts(count: int, seed: int, vocab: int = 48) -> list[list[int]]:
    """`count` seeded random prompts of 2..6 tokens."""
    rng = random.Random(seed)
    return [[rng.randrange(vocab) for _ in range(rng.randint(2, 6))] for _ in range(count)]


def distilled_batch(model: PreTrainedModel) -> torch.Tensor:
    """The frozen model's own greedy continuations of 32 prompts, cut to one width."""
    sequences = [p + plain_greedy(model, p, 24) for p in prompts(32, seed=1)]
    width = min(len(s) for s in sequences)
    return torch.tensor([s[:width] for s in sequences])
