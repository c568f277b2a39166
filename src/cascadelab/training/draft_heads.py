"""Training draft heads on a frozen causal LM (self-distillation); the heads themselves are `models/draft_heads.py`.

`train_draft_heads` fits the heads with the model frozen (its parameters are never changed): AdamW on
the mean over heads of ``CE(head_i(h_t), x_{t+1+i})`` (`draft_loss`), optionally only over the targets a
mask marks (the completion: decoding never drafts prompt tokens). Trained on the model's own greedy
continuations (self-distillation), a head learns what the model will say, which is what verification
accepts.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel

from cascadelab.models.draft_heads import DraftHeads


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

    ``target_masks`` (one per batch, see `draft_loss`) restricts the loss to the marked targets.
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
    heads.train()
    rng = random.Random(seed)
    optimizer = torch.optim.AdamW(heads.parameters(), lr=lr)
    order: list[int] = []
    losses: list[float] = []
    try:
        for _ in range(steps):
            if not order:
                order = list(range(len(batches)))
                rng.shuffle(order)
            optimizer.zero_grad()
            index = order.pop()
            loss = draft_loss(model, heads, batches[index], None if target_masks is None else target_masks[index])
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
    finally:
        for parameter, flag in zip(model.parameters(), flags, strict=True):
            parameter.requires_grad_(flag)
        model.train(was_training)
    heads.eval()
    return losses
