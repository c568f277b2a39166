"""A tiny LEGO config and seeded id batches shared by the LEGO model tests."""

from __future__ import annotations

import torch

from cascadelab.models.lego import LEGOConfig

VOCAB = 16


def tiny_config(**overrides: object) -> LEGOConfig:
    """A 16-token, 16-wide config; ``overrides`` replace any field."""
    base: dict[str, object] = dict(vocab_size=VOCAB, hidden_size=16, intermediate_size=32, num_attention_heads=2)
    return LEGOConfig(**{**base, **overrides})


def ids(batch: int = 3, length: int = 9, seed: int = 0) -> torch.Tensor:
    """Seeded token ids (batch, length) in 3..VOCAB-1."""
    return torch.randint(3, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


def batch(seed: int = 0) -> dict[str, torch.Tensor]:
    """One batch whose first four tokens are prompt (labels -100)."""
    x = ids(seed=seed)
    labels = x.clone()
    labels[:, :4] = -100  # prompt
    return {"input_ids": x, "attention_mask": torch.ones_like(x), "labels": labels}
