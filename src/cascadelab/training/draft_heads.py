"""Training draft heads on a frozen causal LM (self-distillation); the heads themselves are `models/draft_heads.py`.

`train_draft_heads` fits the heads with the model frozen (its parameters are never changed): AdamW on
the mean over heads of ``CE(head_i(h_t), x_{t+1+i})`` (`draft_loss`), optionally only over the targets a
mask marks (the completion: decoding never drafts prompt tokens). Trained on the model's own greedy
continuations (self-distillation), a head learns what the model will say, which is what verification
accepts.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel

from cascadelab.models.draft_heads import DraftHeads
from cascadelab.training.callbacks import StepLosses
from cascadelab.training.schedules import constant_schedule
from cascadelab.training.trainer import LMTrainer, StepSettings


def draft_loss(
    model: PreTrainedModel, heads: DraftHeads, ids: torch.Tensor, target_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Cross-entropy of each head against the token it should propose, on sequences ``ids`` ``[B, L]``.

    ``target_mask`` (bool ``[B, L]``) keeps only the target tokens it marks (e.g. the completion, not the
    prompt: decoding only ever drafts completion tokens); a head with no marked target is skipped.
    """
    with torch.no_grad():
        hidden = model.base_model(input_ids=ids, use_cache=False).last_hidden_state
    logits = heads(hidden)  # [B, L, k, V]
    losses = []
    for i in range(heads.num_heads):
        shift = i + 2
        if ids.shape[1] <= shift:
            break
        predicted = logits[:, :-shift, i].reshape(-1, logits.shape[-1])
        targets = ids[:, shift:].reshape(-1)
        if target_mask is not None:
            keep = target_mask[:, shift:].reshape(-1)
            if not bool(keep.any()):
                continue
            predicted, targets = predicted[keep], targets[keep]
        losses.append(F.cross_entropy(predicted, targets))
    if not losses:
        raise ValueError(f"draft_loss: sequences of {ids.shape[1]} tokens have no target for any head")
    return torch.stack(losses).mean()


def train_draft_heads(
    model: PreTrainedModel,
    heads: DraftHeads,
    batches: Sequence[torch.Tensor],
    steps: int,
    lr: float,
    seed: int,
    target_masks: Sequence[torch.Tensor] | None = None,
) -> list[float]:
    """Train `heads` on the frozen `model` (id batches ``[B, L]``, reshuffled each pass by `seed`); loss per step.

    ``target_masks`` (one per batch, see `draft_loss`) restricts the loss to the marked targets. The steps run on
    the LM trainer with `heads` as its model: AdamW at a constant rate, no clipping.
    """
    if not batches or steps <= 0:
        raise ValueError("train_draft_heads: need at least one batch and steps > 0")
    if target_masks is not None and len(target_masks) != len(batches):
        raise ValueError(f"train_draft_heads: {len(target_masks)} target masks for {len(batches)} batches")
    was_training = model.training  # the model's mode and requires_grad flags are restored afterwards
    flags = [p.requires_grad for p in model.parameters()]
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    model.eval()
    losses = StepLosses()

    def compute_loss(heads: DraftHeads, index: int) -> tuple[torch.Tensor, dict[str, float]]:
        mask = None if target_masks is None else target_masks[index]
        return draft_loss(model, heads, batches[index], mask), {}

    optimizer = torch.optim.AdamW(heads.parameters(), lr=lr)
    loop = StepSettings(max_steps=steps, max_grad_norm=None, logging_steps=steps)
    trainer = LMTrainer(
        heads, [optimizer], loop, None, compute_loss=compute_loss, schedule=constant_schedule, callbacks=[losses]
    )
    try:
        trainer.fit(_shuffled_passes(len(batches), seed))
    finally:
        for parameter, flag in zip(model.parameters(), flags, strict=True):
            parameter.requires_grad_(flag)
        model.train(was_training)
    heads.eval()
    return losses.values


def _shuffled_passes(count: int, seed: int) -> Iterator[int]:
    """Batch indices, pass after pass, each pass in an order shuffled by `seed` and taken from its end."""
    rng = random.Random(seed)
    while True:
        order = list(range(count))
        rng.shuffle(order)
        while order:
            yield order.pop()
