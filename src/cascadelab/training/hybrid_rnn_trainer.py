"""Teacher-forced training of the hybrid RNN-Transformer on (prompt, response) pairs, with early stopping.

A plain PyTorch loop (the HF Trainer adds nothing measurable on CPU, STACK-NOTES): AdamW, linear warmup,
constant rate, then linear decay to zero over the last `decay_fraction` of `max_steps` (the schedule that
met the coarse bar); random batches padded to their longest row, padding ignored in the loss; validation
loss every `eval_every` steps, stop after `patience` evaluations without improvement, best weights restored.
With a `LoopCurriculum`, batches come from it instead (warm-up tasks first, then the full mix, one task per
batch) and early stopping only counts evaluations of the mix phase: the warm-up does not train the other
tasks, so their validation loss is not expected to fall yet.
Everything random (shuffling, dropout) is drawn from `settings.seed` inside a forked RNG, so the same
inputs give the same weights and the caller's RNG state is left as it was.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from pydantic import BaseModel, ConfigDict, Field
from transformers import PreTrainedTokenizerBase

from cascadelab.data.curriculum import LoopCurriculum
from cascadelab.data.seq2seq import Seq2SeqBatch, collate_seq2seq, encode_pairs, length_sorted_batches
from cascadelab.models.hybrid_rnn.modeling_hybrid_rnn import HybridRNNTransformer, seq2seq_loss

LogFn = Callable[[dict[str, float], int], None]


class HybridRNNTrainSettings(BaseModel):
    """Optimisation settings of `train_hybrid_rnn` (one params.yaml section)."""

    model_config = ConfigDict(extra="forbid")

    lr: float = Field(1e-3, gt=0, description="peak AdamW learning rate")
    batch_size: int = Field(16, gt=0, description="training pairs per step")
    max_steps: int = Field(3000, gt=0, description="optimizer steps at most")
    warmup_steps: int = Field(100, ge=0, description="linear warmup from 0 to lr")
    decay_fraction: float = Field(0.2, ge=0, le=1, description="final share of max_steps decayed linearly to 0")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay")
    grad_clip: float = Field(1.0, gt=0, description="max global gradient norm")
    eval_every: int = Field(200, gt=0, description="steps between validation-loss evaluations")
    log_every: int = Field(50, gt=0, description="steps per training-loss row (the curriculum's loss window)")
    patience: int = Field(5, ge=1, description="evaluations without val-loss improvement before stopping")
    min_delta: float = Field(0.0, ge=0, description="val-loss decrease that counts as an improvement")
    eval_batch_size: int = Field(128, gt=0, description="pairs per validation batch")
    seed: int = Field(0, description="seed of shuffling and dropout")


@dataclass
class TrainResult:
    """What a training run did: steps, best validation point, timing, evaluation and training-loss history."""

    steps: int
    best_step: int
    best_val_loss: float
    stopped_early: bool
    train_seconds: float
    tokens_per_s: float
    history: list[dict[str, float]] = field(default_factory=list)
    train_history: list[dict[str, float]] = field(default_factory=list)
    curriculum_switch_step: int | None = None
    train_tokens: int = 0


def lr_multiplier(step: int, settings: HybridRNNTrainSettings) -> float:
    """Warmup-stable-decay factor on `settings.lr` for optimizer step `step` (0-based)."""
    if settings.warmup_steps and step < settings.warmup_steps:
        return (step + 1) / settings.warmup_steps
    decay_steps = int(settings.max_steps * settings.decay_fraction)
    decay_start = settings.max_steps - decay_steps
    if decay_steps and step >= decay_start:
        return max(0.0, (settings.max_steps - step) / decay_steps)
    return 1.0


def _check_tokenizer(model: HybridRNNTransformer, tokenizer: PreTrainedTokenizerBase) -> None:
    config = model.config
    for name in ("pad_token_id", "eos_token_id"):
        if getattr(tokenizer, name) != getattr(config, name):
            raise ValueError(
                f"tokenizer {name} {getattr(tokenizer, name)} != model config {name} {getattr(config, name)}"
            )
    if len(tokenizer) > config.vocab_size:
        raise ValueError(f"tokenizer has {len(tokenizer)} tokens but model vocab_size is {config.vocab_size}")


def _batch_loss(model: HybridRNNTransformer, batch: Seq2SeqBatch, reduction_sum: bool) -> torch.Tensor:
    """Mean (or summed) target cross-entropy of one padded batch."""
    if batch.labels is None:
        raise ValueError("a training batch needs labels")
    device = model.device
    labels = batch.labels.to(device)
    out = model(input_ids=batch.input_ids.to(device), attention_mask=batch.attention_mask.to(device), labels=labels)
    if not reduction_sum:
        return out.loss
    config = model.config
    return seq2seq_loss(out.logits, labels, config.pad_token_id, config.eos_token_id, num_items_in_batch=1)


@torch.no_grad()
def validation_loss(
    model: HybridRNNTransformer, encoded: Sequence[tuple[list[int], list[int]]], batch_size: int
) -> float:
    """Token-weighted mean cross-entropy of targets (+ EOS) given sources, in eval mode."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    pad = model.config.pad_token_id if model.config.pad_token_id is not None else 0
    for idx in length_sorted_batches([len(s) + len(t) for s, t in encoded], batch_size):
        batch = collate_seq2seq([encoded[i][0] for i in idx], [encoded[i][1] for i in idx], pad)
        total += float(_batch_loss(model, batch, reduction_sum=True))
        count += batch.num_target_tokens()
    model.train(was_training)
    return total / max(count, 1)


def train_hybrid_rnn(
    model: HybridRNNTransformer,
    train_examples: Sequence[tuple[str, str]],
    val_examples: Sequence[tuple[str, str]],
    tokenizer: PreTrainedTokenizerBase,
    settings: HybridRNNTrainSettings,
    log_fn: LogFn | None = None,
    curriculum: LoopCurriculum | None = None,
) -> TrainResult:
    """Train `model` in place on (prompt, response) pairs; returns with the best-val-loss weights loaded.

    `log_fn(metrics, step)` gets `train_loss` (mean since the last evaluation), `val_loss`, `lr` and
    `tokens_per_s` at every evaluation; `TrainResult.train_history` has the mean loss and the rate every
    `log_every` steps. `curriculum` (built over the rows of `train_examples`) replaces random batches.
    The model is left in eval mode.
    """
    if not train_examples:
        raise ValueError("train_examples is empty")
    if not val_examples:
        raise ValueError("val_examples is empty: early stopping needs a validation set")
    if curriculum is not None and curriculum.num_rows != len(train_examples):
        raise ValueError(f"curriculum covers {curriculum.num_rows} rows but train_examples has {len(train_examples)}")
    if curriculum is not None and curriculum.batch_size != settings.batch_size:
        raise ValueError(f"curriculum batch_size {curriculum.batch_size} != settings.batch_size {settings.batch_size}")
    _check_tokenizer(model, tokenizer)
    pad = model.config.pad_token_id if model.config.pad_token_id is not None else 0
    train = encode_pairs(tokenizer, train_examples)
    val = encode_pairs(tokenizer, val_examples)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        shuffle = torch.Generator().manual_seed(settings.seed)
        # The fused AdamW kernel is ~5x faster than the default loop on CPU at this size (~15 % of a step).
        fused = model.device.type in ("cpu", "cuda")
        optimizer = torch.optim.AdamW(
            model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay, fused=fused
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_multiplier(s, settings))
        best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        best_val, best_step, bad_evals, stopped_early = math.inf, 0, 0, False
        history: list[dict[str, float]] = []
        train_history: list[dict[str, float]] = []
        order: list[int] = []
        loss_sum, loss_count, tokens, step = 0.0, 0, 0, 0
        window_sum, mixing = 0.0, curriculum is None
        start = time.perf_counter()
        model.train()
        while step < settings.max_steps:
            if curriculum is not None:
                idx = curriculum.next_batch()
            else:
                if len(order) < settings.batch_size:
                    order += torch.randperm(len(train), generator=shuffle).tolist()
                idx, order = order[: settings.batch_size], order[settings.batch_size :]
            batch = collate_seq2seq([train[i][0] for i in idx], [train[i][1] for i in idx], pad)
            loss = _batch_loss(model, batch, reduction_sum=False)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
            optimizer.step()
            scheduler.step()
            step += 1
            loss_value = float(loss.detach())
            loss_sum, loss_count, window_sum = loss_sum + loss_value, loss_count + 1, window_sum + loss_value
            tokens += int(batch.attention_mask.sum()) + batch.num_target_tokens()
            window_loss = None
            if step % settings.log_every == 0:
                window_loss, window_sum = window_sum / settings.log_every, 0.0
                train_history.append(
                    {"step": float(step), "loss": window_loss, "learning_rate": optimizer.param_groups[0]["lr"]}
                )
            if curriculum is not None:
                curriculum.observe(step, window_loss)
                if not mixing and curriculum.mixing_at(step):
                    # New objective: pick the best weights (and count patience) among mix-phase evaluations.
                    mixing, best_val, bad_evals = True, math.inf, 0
            if step % settings.eval_every and step != settings.max_steps:
                continue
            val_loss = validation_loss(model, val, settings.eval_batch_size)
            elapsed = time.perf_counter() - start
            metrics = {
                "train_loss": loss_sum / loss_count,
                "val_loss": val_loss,
                "lr": optimizer.param_groups[0]["lr"],
                "tokens_per_s": tokens / elapsed,
            }
            history.append({"step": float(step), **metrics})
            if log_fn is not None:
                log_fn(metrics, step)
            loss_sum, loss_count = 0.0, 0
            if val_loss < best_val - settings.min_delta:
                best_val, best_step, bad_evals = val_loss, step, 0
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            elif mixing:
                bad_evals += 1
                if bad_evals >= settings.patience:
                    stopped_early = True
                    break
        elapsed = time.perf_counter() - start
    model.load_state_dict(best_state)
    model.eval()
    return TrainResult(
        steps=step,
        best_step=best_step,
        best_val_loss=best_val,
        stopped_early=stopped_early,
        train_seconds=elapsed,
        tokens_per_s=tokens / elapsed,
        history=history,
        train_history=train_history,
        curriculum_switch_step=None if curriculum is None else curriculum.state.switch_step,
        train_tokens=tokens,
    )
