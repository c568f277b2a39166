"""LEGO training: stage-weighted losses, early stopping, hard-example mining and upper-block training.

Two-phase recipe (seed 004), with the seed's leakage fixed (threshold on val, hard examples from
train, evaluation on test):

1. ``train_phase1``: a shallow model (``phase1_layers``) trained to stand alone, with early stopping.
2. ``prepare_hard_examples``: threshold on val so that ``hard_example_ratio`` of its response tokens
   fall below it; token-level hard examples (exit-layer state + target, fp16) from train, and from
   val for phase-2 early stopping. ``save_hard_examples`` writes them atomically (safetensors).
3. ``train_phase2``: ``extend_from`` with frozen lower layers, ``train_upper_layers`` on the hard
   examples with early stopping on the val hard examples, routed evaluation on test.
   ``train_full_depth`` trains the standard baseline of the same depth for a given token budget.

The loops read the `lego` params section's blocks as they are (``LegoLoopParams`` for phase 1 and the
baseline, ``LegoPhase2Params`` for phase 2); what no params key sets (the loss stages, the token budget,
the routing of an evaluation) is an argument. Every loss is next-token cross-entropy on response tokens
only (labels -100 elsewhere); batches are dicts of tensors ``input_ids``, ``attention_mask`` (optional)
and ``labels`` aligned with the inputs.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TypedDict

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from cascadelab.config import LegoLoopParams, LegoPhase2Params
from cascadelab.data.batches import collate_rows
from cascadelab.data.cell_batches import EncodedRecord, cell_chunks, chunk_count, pass_rng
from cascadelab.io import atomic_file
from cascadelab.models.lego import LEGOConfig, LEGOTransformer, build_lego_model
from cascadelab.models.lego.calibration import compute_confidence, compute_confidence_threshold
from cascadelab.models.lego.flops import routed_compute_cost
from cascadelab.models.lego.modeling_lego import IGNORE_INDEX, shifted_targets
from cascadelab.models.utils import batch_to_device, count_parameters, to_device
from cascadelab.training.callbacks import EarlyStopping, TrainerCallback, clone_state
from cascadelab.training.schedules import Schedule, constant_schedule, warmup_factor, wsd_schedule
from cascadelab.training.trainer import LMTrainer, StepSettings

Batch = Mapping[str, torch.Tensor]
LogFn = Callable[[dict[str, float], int], None]


# --------------------------------------------------------------------------- loss stages

# A loss term: weight x the next-token loss averaged over layers first..last (1-based, inclusive).
LossStage = tuple[int, int, float]


def standard_stages(num_layers: int) -> list[LossStage]:
    """Standard LM: one loss at the last layer."""
    return [(num_layers, num_layers, 1.0)]


def deep_supervision_stages(num_layers: int) -> list[LossStage]:
    """Deep supervision: an equal-weight loss at every layer (each through its block's exit head)."""
    return [(i, i, 1.0 / num_layers) for i in range(1, num_layers + 1)]


def _check_stages(stages: Sequence[LossStage]) -> list[LossStage]:
    """The stages as a list; ValueError naming the first bad one."""
    if not stages:
        raise ValueError("stages: need at least one loss stage")
    for first, last, weight in stages:
        if not 1 <= first <= last:
            raise ValueError(f"layers: need 1 <= first <= last, got {(first, last)}")
        if weight < 0:
            raise ValueError(f"loss_weight: must be >= 0, got {weight}")
    return list(stages)


# --------------------------------------------------------------------------- trainer


def _to_device(batch: Mapping[str, torch.Tensor], device: torch.device | str) -> dict[str, torch.Tensor]:
    """`batch_to_device`, keeping LEGO's extra keys (``loss_weights``, ``seq``) beside the model's."""
    extra = {k: v.to(device) for k, v in batch.items() if k in ("loss_weights", "seq")}
    return {**batch_to_device(batch, device), **extra}


def _n_targets(labels: torch.Tensor) -> int:
    return int((shifted_targets(labels) != IGNORE_INDEX).sum())


class Trainer:
    """Trains LEGO models on a stage-weighted loss and evaluates them, full depth or routed."""

    def __init__(
        self, stages: Sequence[LossStage], vocab_size: int | None = None, device: torch.device | str = "cpu"
    ) -> None:
        self.stages = _check_stages(stages)
        self.vocab_size = vocab_size
        self.device = torch.device(device)

    @property
    def loss_layers(self) -> list[int]:
        """Every layer that carries a loss term, ascending."""
        return sorted({x for first, last, _ in self.stages for x in range(first, last + 1)})

    def _check_vocab(self, model: LEGOTransformer) -> None:
        if self.vocab_size is not None and model.config.vocab_size != self.vocab_size:
            raise ValueError(f"vocab_size: trainer has {self.vocab_size}, model has {model.config.vocab_size}")

    def _check_model(self, model: LEGOTransformer) -> None:
        self._check_vocab(model)
        if self.loss_layers[-1] > model.config.depth:
            raise ValueError(f"stages: layer {self.loss_layers[-1]} exceeds the model depth {model.config.depth}")

    def create_optimizer(
        self, model: nn.Module, base_lr: float = 1e-3, weight_decay: float = 0.0
    ) -> torch.optim.Optimizer:
        """AdamW over the trainable parameters; no decay on norms (1-D weights)."""
        params = [p for p in model.parameters() if p.requires_grad]
        decay = [p for p in params if p.ndim >= 2]
        no_decay = [p for p in params if p.ndim < 2]
        groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=base_lr)

    def layer_losses(self, model: LEGOTransformer, batch: Batch, reduction: str = "mean") -> dict[int, torch.Tensor]:
        """Next-token loss of every loss layer of the stages for one batch on ``self.device``."""
        ids, mask, labels = batch["input_ids"], batch.get("attention_mask"), batch["labels"]
        layers = self.loss_layers
        if layers == [model.config.depth]:
            all_logits = [model(input_ids=ids, attention_mask=mask, use_cache=False).logits]
        else:
            all_logits = model.forward_all_layers(ids, mask, layers=layers)
        targets = shifted_targets(labels).flatten()
        weights = batch.get("loss_weights")
        if weights is None:
            return {
                layer: F.cross_entropy(
                    logits.float().flatten(0, 1), targets, ignore_index=IGNORE_INDEX, reduction=reduction
                )
                for layer, logits in zip(layers, all_logits, strict=True)
            }
        # weighted (phase 2): hard tokens 1, easy ones less; the mean divides by the total weight
        w = weights.flatten() * (targets != IGNORE_INDEX)
        out = {}
        for layer, logits in zip(layers, all_logits, strict=True):
            nll = F.cross_entropy(logits.float().flatten(0, 1), targets, ignore_index=IGNORE_INDEX, reduction="none")
            total = (nll * w).sum()
            out[layer] = total if reduction == "sum" else total / w.sum().clamp(min=1e-8)
        return out

    def combine(self, per_layer: Mapping[int, torch.Tensor]) -> torch.Tensor:
        """Weighted sum over stages of the mean loss over each stage's layers."""
        total = torch.zeros((), device=next(iter(per_layer.values())).device)
        for first, last, weight in self.stages:
            terms = [per_layer[x] for x in range(first, last + 1)]
            total = total + weight * torch.stack(terms).mean()
        return total

    def compute_loss(self, model: LEGOTransformer, batch: Batch) -> torch.Tensor:
        """Training objective of one batch (already on the device)."""
        return self.combine(self.layer_losses(model, batch))

    @torch.no_grad()
    def validation_loss(self, model: LEGOTransformer, batches: Iterable[Batch]) -> float:
        """The training objective on ``batches``, token-weighted across batches."""
        self._check_model(model)
        model.eval()
        sums: dict[int, torch.Tensor] = {}
        tokens = 0
        for raw in batches:
            batch = _to_device(raw, self.device)
            for layer, value in self.layer_losses(model, batch, reduction="sum").items():
                sums[layer] = sums.get(layer, torch.zeros((), device=self.device)) + value
            tokens += _n_targets(batch["labels"])
        if tokens == 0:
            raise ValueError("val batches: no response tokens (all labels are -100)")
        return float(self.combine({k: v / tokens for k, v in sums.items()}))

    def train_with_early_stopping(
        self,
        model: LEGOTransformer,
        train_loader: Iterable[Batch],
        val_loader: Iterable[Batch],
        optimizer: torch.optim.Optimizer,
        loop: LegoLoopParams,
        schedule: Schedule | None = None,
        log_fn: LogFn | None = None,
        max_train_tokens: int | None = None,
    ) -> dict[str, float]:
        """Train until val stops improving for ``loop.patience`` evaluations; restore the best weights.

        Stops also at ``loop.max_epochs``, ``loop.max_steps`` or ``max_train_tokens`` supervised tokens (a
        token budget). ``schedule(step)`` multiplies the optimizer's rates (None: constant); the optimizer
        brings its own rate. Returns best_val_loss, best_val_ppl, best_step, steps, epochs, train_tokens and
        stopped_early (1.0 or 0.0).
        """
        self._check_model(model)
        run = _EarlyStoppingRun(self, model, train_loader, val_loader, loop, max_train_tokens, log_fn)
        steps = StepSettings(
            max_steps=loop.max_steps or sys.maxsize, max_grad_norm=loop.grad_clip, logging_steps=loop.log_every
        )
        trainer = LMTrainer(
            model,
            [optimizer],
            steps,
            None,
            compute_loss=run.compute_loss,
            schedule=schedule or constant_schedule,
            callbacks=[run],
            until_data_ends=True,
        )
        trainer.fit(run.batches())
        if run.last_eval_step != run.step:
            run.validate()
        model.load_state_dict(run.stopping.best_state)
        best_loss = run.stopping.best_value
        return {
            "best_val_loss": best_loss,
            "best_val_ppl": math.exp(min(best_loss, 50.0)),
            "best_step": float(run.stopping.best_step),
            "steps": float(run.step),
            "epochs": float(run.epochs),
            "train_tokens": float(run.tokens),
            "stopped_early": float(run.stopped_early),
        }

    @torch.no_grad()
    def evaluate(
        self,
        model: LEGOTransformer,
        batches: Iterable[Batch],
        routing_threshold: float | None = None,
        exit_layer: int | None = None,
    ) -> dict[str, float]:
        """Teacher-forced metrics on response tokens: acc, ppl, shallow_ratio, compute_cost.

        With ``routing_threshold`` set, tokens are routed at ``exit_layer`` (None: the model's) with
        ``forward_inference``: shallow_ratio is the share that exits there, compute_cost the counted FLOPs
        per token over full depth's (`cascadelab.models.lego.flops`). Without it: full depth (0.0 and 1.0).
        """
        self._check_vocab(model)
        model.eval()
        exit_layer = exit_layer if exit_layer is not None else model.config.exit_layer
        assert exit_layer is not None
        nll = correct = tokens = exited = 0.0
        for raw in batches:
            batch = _to_device(raw, self.device)
            ids, attn = batch["input_ids"], batch.get("attention_mask")
            targets = shifted_targets(batch["labels"])
            mask = targets != IGNORE_INDEX
            if routing_threshold is not None:
                out = model.forward_inference(ids, attn, routing_threshold, exit_layer, mask)
                logits = out.logits
                exited += float(out.exited[mask].sum())
            else:
                logits = model(input_ids=ids, attention_mask=attn, use_cache=False).logits
            logits, gold = logits[mask].float(), targets[mask]
            nll += float(F.cross_entropy(logits, gold, reduction="sum"))
            correct += float((logits.argmax(-1) == gold).sum())
            tokens += float(mask.sum())
        if tokens == 0:
            raise ValueError("batches: no response tokens (all labels are -100)")
        shallow_ratio = exited / tokens
        cost = 1.0
        if routing_threshold is not None:
            cost = routed_compute_cost(model.config, exit_layer, shallow_ratio)
        return {
            "acc": correct / tokens,
            "ppl": math.exp(nll / tokens),
            "shallow_ratio": shallow_ratio,
            "compute_cost": cost,
        }


# --------------------------------------------------------------------------- hard examples


class _EarlyStoppingRun(TrainerCallback):
    """LEGO's part of one LM-trainer run: epochs, training-loss log, validation and the token budget.

    Batches without targets are skipped (they are not steps); validation runs every ``eval_every`` steps, else at
    each epoch's end; more than ``patience`` evaluations without improvement stop the run.
    """

    def __init__(
        self,
        owner: Trainer,
        model: LEGOTransformer,
        train_loader: Iterable[Batch],
        val_loader: Iterable[Batch],
        loop: LegoLoopParams,
        max_train_tokens: int | None,
        log_fn: LogFn | None,
    ) -> None:
        self.owner, self.model, self.log_fn = owner, model, log_fn
        self.train_loader, self.val_loader = train_loader, val_loader
        self.loop, self.max_train_tokens = loop, max_train_tokens
        self.stopping = EarlyStopping(loop.patience + 1)
        self.stopping.best_state = clone_state(model)
        self.step = self.tokens = self.epochs = self.targets = 0
        self.last_eval_step = -1
        self.stopped_early = False
        self.run_loss = self.run_tokens = 0.0

    def batches(self) -> Iterator[Batch]:
        """Batches with targets, on the device, epoch after epoch; validates at an epoch's end without `eval_every`."""
        while self.epochs < self.loop.max_epochs:
            self.epochs += 1
            for raw in self.train_loader:
                batch = _to_device(raw, self.owner.device)
                if _n_targets(batch["labels"]):
                    yield batch
            if self.loop.eval_every is None and self.validate():
                self.stopped_early = True
                return

    def compute_loss(self, model: LEGOTransformer, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        """The stage-weighted loss in train mode; stats: the supervised tokens."""
        self.targets = _n_targets(batch["labels"])
        model.train()
        return self.owner.compute_loss(model, batch), {"tokens": self.targets, "target_tokens": self.targets}

    def validate(self) -> bool:
        """Validate at the current step; True when the patience is used up."""
        self.last_eval_step = self.step
        val = self.owner.validation_loss(self.model, self.val_loader)
        if self.log_fn is not None:
            self.log_fn({"val_loss": val, "val_ppl": math.exp(min(val, 50.0))}, self.step)
        return self.stopping.observe(self.model, self.step, val)

    def on_step_end(self, trainer: LMTrainer, step: int, loss: float) -> None:
        """Log the training loss when due, validate when due, stop on used-up patience or a spent token budget."""
        loop, n = self.loop, self.targets
        self.step, self.tokens = step, self.tokens + n
        self.run_loss, self.run_tokens = self.run_loss + loss * n, self.run_tokens + n
        if self.log_fn is not None and step % loop.log_every == 0:
            lr = float(trainer.optimizers[0].param_groups[0]["lr"])
            self.log_fn(
                {"train_loss": self.run_loss / self.run_tokens, "lr": lr, "train_tokens": float(self.tokens)}, step
            )
            self.run_loss = self.run_tokens = 0.0
        if loop.eval_every is not None and step % loop.eval_every == 0 and self.validate():
            self.stopped_early = trainer.should_stop = True
        elif self.max_train_tokens is not None and self.tokens >= self.max_train_tokens:
            trainer.should_stop = True


class HardExamples(TypedDict):
    """Token-level hard examples: one row per low-confidence response token, pointing at its sequence.

    ``seq`` indexes the split's encoded records (their corpus order) and ``pos`` the position whose
    next token is the target, so the upper block can be trained with the sequence's context.
    """

    seq: torch.Tensor  # (N,) int64: index of the sequence in the split
    pos: torch.Tensor  # (N,) int64: position in the sequence (it predicts the token at pos + 1)
    targets: torch.Tensor  # (N,) int64: the next token to predict
    confidences: torch.Tensor  # (N,) float32: exit-head max probability (< threshold)


HARD_KEYS = ("seq", "pos", "targets", "confidences")


def indexed_batches(items: Sequence[EncodedRecord], batch_size: int, pad_id: int) -> Iterator[dict[str, torch.Tensor]]:
    """Batches of ``items`` of like lengths (little padding) with ``seq`` (B,), the index of each row's record."""
    if batch_size < 1:
        raise ValueError(f"batch_size: must be >= 1, got {batch_size}")
    order = sorted(range(len(items)), key=lambda i: len(items[i].input_ids))
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        batch = collate_rows([items[i] for i in chunk], pad_id)
        yield {**batch, "seq": torch.tensor(chunk)}


@torch.no_grad()
def collect_hard_examples(
    model: LEGOTransformer,
    batches: Iterable[Batch],
    confidence_threshold: float,
    device: torch.device | str = "cpu",
    max_examples: int | None = None,
    exit_layer: int | None = None,
) -> HardExamples:
    """Pointers (sequence, position), targets and confidences of the response tokens whose confidence < threshold.

    ``batches`` carry ``seq`` (see :func:`indexed_batches`). Rows keep loader order; collection stops
    once ``max_examples`` rows are held (the cap).
    """
    if max_examples is not None and max_examples < 1:
        raise ValueError(f"max_examples: must be >= 1, got {max_examples}")
    model.eval()
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in HARD_KEYS}
    held = 0
    for raw in batches:
        if max_examples is not None and held >= max_examples:
            break
        batch = _to_device(raw, device)
        h = model.exit_hidden_states(batch["input_ids"], batch.get("attention_mask"), exit_layer)
        targets = shifted_targets(batch["labels"])
        mask = targets != IGNORE_INDEX
        conf = compute_confidence(model, h, exit_layer)
        hard = mask & (conf < confidence_threshold)
        b_idx, t_idx = hard.nonzero(as_tuple=True)
        rows = {
            "seq": batch["seq"][b_idx],
            "pos": t_idx,
            "targets": targets[b_idx, t_idx],
            "confidences": conf[b_idx, t_idx].float(),
        }
        take = rows["targets"].numel()
        if max_examples is not None:
            take = min(take, max_examples - held)
        for key, value in rows.items():
            parts[key].append(value[:take].cpu())
        held += take
    empty = {k: torch.empty(0, dtype=torch.float32 if k == "confidences" else torch.long) for k in HARD_KEYS}
    out = {k: torch.cat(v) if v else empty[k] for k, v in parts.items()}
    return HardExamples(seq=out["seq"], pos=out["pos"], targets=out["targets"], confidences=out["confidences"])


def hard_tensors(examples: HardExamples) -> dict[str, torch.Tensor]:
    """The tensors of ``examples`` as a plain dict keyed by :data:`HARD_KEYS`."""
    return {k: examples[k] for k in HARD_KEYS}  # type: ignore[literal-required]


def hard_examples_nbytes(examples: HardExamples) -> int:
    """Bytes held by the tensors of ``examples``."""
    return sum(t.numel() * t.element_size() for t in hard_tensors(examples).values())


class HardSequenceBatches:
    """Batches of the sequences that hold hard examples, with per-position loss weights.

    Each batch is a dict of ``input_ids``, ``attention_mask``, ``labels`` and ``loss_weights`` (B, T),
    aligned with the shifted targets: 1 at a hard token, ``easy_weight`` at the sequence's other response
    tokens. One cell per batch (like `CellBatches`), reshuffled on every pass with a seed. ``positions``
    counts the padded positions yielded (the compute spent).
    """

    def __init__(
        self,
        hard: HardExamples,
        items: Sequence[EncodedRecord],
        batch_size: int,
        pad_id: int,
        easy_weight: float,
        seed: int | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size: must be >= 1, got {batch_size}")
        if not 0.0 <= easy_weight <= 1.0:
            raise ValueError(f"easy_weight: must be in [0, 1], got {easy_weight}")
        if hard["seq"].numel() and int(hard["seq"].max()) >= len(items):
            raise ValueError(f"hard_examples: point at sequence {int(hard['seq'].max())} of {len(items)}")
        self.items, self.batch_size, self.pad_id = items, batch_size, pad_id
        self.easy_weight, self.seed = easy_weight, seed
        self.hard_at: dict[int, list[int]] = {}
        for seq, pos in zip(hard["seq"].tolist(), hard["pos"].tolist(), strict=True):
            self.hard_at.setdefault(seq, []).append(pos)
        self.cells: dict[str, list[int]] = {}
        for seq in sorted(self.hard_at):
            self.cells.setdefault(items[seq].cell, []).append(seq)
        self.passes = self.positions = 0

    def __len__(self) -> int:
        return chunk_count(self.cells, self.batch_size)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        rng = pass_rng(self.seed, self.passes)
        self.passes += 1
        for chunk in cell_chunks(self.cells, self.batch_size, rng):
            batch = collate_rows([self.items[i] for i in chunk], self.pad_id)
            supervised = shifted_targets(batch["labels"]) != IGNORE_INDEX
            weights = supervised.float() * self.easy_weight
            for row, seq in enumerate(chunk):
                weights[row, self.hard_at[seq]] = 1.0
            self.positions += batch["input_ids"].numel()
            yield {**batch, "loss_weights": weights}


def create_hard_example_loader(
    hard_examples: HardExamples,
    items: Sequence[EncodedRecord],
    batch_size: int = 64,
    pad_id: int = 0,
    easy_weight: float = 0.3,
    seed: int | None = 0,
) -> HardSequenceBatches:
    """Batches of the hard examples' sequences with hard tokens weighted 1 and easy ones ``easy_weight``."""
    return HardSequenceBatches(hard_examples, items, batch_size, pad_id, easy_weight, seed)


def train_upper_layers(
    model: LEGOTransformer,
    hard_batches: Iterable[Batch],
    optimizer: torch.optim.Optimizer,
    vocab_size: int,
    device: torch.device | str = "cpu",
    num_lower_layers: int = 2,
    grad_clip: float | None = 1.0,
) -> float:
    """One pass of the upper layers on hard-example batches (weighted loss, full depth); returns the mean loss.

    The lower block and the embeddings get no gradient when frozen (``extend_from(freeze_lower=True)``).
    """
    _check_upper(model, vocab_size, num_lower_layers)
    trainer = Trainer(standard_stages(model.config.depth), vocab_size, device)
    losses: list[float] = []

    def compute_loss(m: LEGOTransformer, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        m.train()
        loss = trainer.compute_loss(m, batch)
        losses.append(float(loss))
        n = _n_targets(batch["labels"])
        return loss, {"tokens": n, "target_tokens": n}

    loop = StepSettings(max_steps=sys.maxsize, max_grad_norm=grad_clip, logging_steps=sys.maxsize)
    lm = LMTrainer(
        model, [optimizer], loop, None, compute_loss=compute_loss, schedule=constant_schedule, until_data_ends=True
    )
    lm.fit(_to_device(b, device) for b in hard_batches)
    return sum(losses) / max(len(losses), 1)


@torch.no_grad()
def evaluate_on_hard_examples(
    model: LEGOTransformer,
    hard_batches: Iterable[Batch],
    vocab_size: int,
    device: torch.device | str = "cpu",
    num_lower_layers: int = 2,
) -> dict[str, float]:
    """Loss, ppl and acc at full depth on the hard tokens (weight 1), and ``shallow_ppl`` of the exit head."""
    _check_upper(model, vocab_size, num_lower_layers)
    model.eval()
    nll = shallow_nll = correct = tokens = 0.0
    for raw in hard_batches:
        batch = _to_device(raw, device)
        out = model.forward_train(batch["input_ids"], batch.get("attention_mask"), num_lower_layers)
        targets = shifted_targets(batch["labels"])
        hard = batch["loss_weights"] >= 1.0
        gold = targets[hard]
        deep, shallow = out.deep_logits[hard].float(), out.shallow_logits[hard].float()
        nll += float(F.cross_entropy(deep, gold, reduction="sum"))
        shallow_nll += float(F.cross_entropy(shallow, gold, reduction="sum"))
        correct += float((deep.argmax(-1) == gold).sum())
        tokens += gold.numel()
    if tokens == 0:
        raise ValueError("hard_batches: no hard examples")
    return {
        "loss": nll / tokens,
        "ppl": math.exp(nll / tokens),
        "acc": correct / tokens,
        "shallow_ppl": math.exp(shallow_nll / tokens),
    }


def _check_upper(model: LEGOTransformer, vocab_size: int, num_lower_layers: int) -> None:
    if model.config.vocab_size != vocab_size:
        raise ValueError(f"vocab_size: got {vocab_size}, model has {model.config.vocab_size}")
    if num_lower_layers not in model.config.exit_points[:-1]:
        raise ValueError(
            f"num_lower_layers: must be an exit below the top, one of {model.config.exit_points[:-1]}, "
            f"got {num_lower_layers}"
        )


# --------------------------------------------------------------------------- artifacts


class HardExampleSets(TypedDict):
    """What the hard-example stage produces: the threshold and the train/val hard examples."""

    threshold: float
    train: HardExamples
    val: HardExamples


def prepare_hard_examples(
    model: LEGOTransformer,
    train_items: Sequence[EncodedRecord],
    val_items: Sequence[EncodedRecord],
    *,
    hard_example_ratio: float,
    batch_size: int,
    pad_id: int,
    max_train_examples: int | None = None,
    max_val_examples: int | None = None,
    device: torch.device | str = "cpu",
) -> HardExampleSets:
    """Threshold calibrated on val; hard examples from train (for training) and val (early stopping).

    The rows point into ``train_items`` / ``val_items`` in the given order.
    """
    val_batches = list(indexed_batches(val_items, batch_size, pad_id))
    threshold = compute_confidence_threshold(model, val_batches, hard_example_ratio, device)
    train_batches = indexed_batches(train_items, batch_size, pad_id)
    return HardExampleSets(
        threshold=threshold,
        train=collect_hard_examples(model, train_batches, threshold, device, max_train_examples),
        val=collect_hard_examples(model, val_batches, threshold, device, max_val_examples),
    )


def save_hard_examples(path: str | Path, sets: HardExampleSets) -> int:
    """Write ``sets`` to one safetensors file atomically; returns the file size in bytes."""
    path = Path(path)
    tensors = {
        f"{name}.{k}": v.contiguous()
        for name, split in (("train", sets["train"]), ("val", sets["val"]))
        for k, v in hard_tensors(split).items()
    }
    with atomic_file(path) as tmp:
        save_file(tensors, str(tmp), metadata={"threshold": repr(float(sets["threshold"]))})
    return path.stat().st_size


def load_hard_examples(path: str | Path) -> HardExampleSets:
    """Read what :func:`save_hard_examples` wrote."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata() or {}
    if "threshold" not in metadata:
        raise ValueError(f"{path}: not a hard-example file (no threshold in its metadata)")
    flat = load_file(str(path))

    def split(name: str) -> HardExamples:
        return HardExamples(
            seq=flat[f"{name}.seq"],
            pos=flat[f"{name}.pos"],
            targets=flat[f"{name}.targets"],
            confidences=flat[f"{name}.confidences"],
        )

    return HardExampleSets(threshold=float(metadata["threshold"]), train=split("train"), val=split("val"))


# --------------------------------------------------------------------------- entry points


def train_phase1(
    config: LEGOConfig,
    train_loader: Iterable[Batch],
    val_loader: Iterable[Batch],
    loop: LegoLoopParams,
    *,
    deep_supervision: bool = False,
    seed: int = 0,
    device: torch.device | str = "cpu",
    log_fn: LogFn | None = None,
) -> tuple[LEGOTransformer, dict[str, float]]:
    """Phase 1: build the shallow model of ``config`` (one exit, at its top) and train it to stand alone.

    lr, patience and the loop come from ``loop`` (the section's ``phase1``); returns the model (best val
    weights) and metrics.
    """
    return train_full_depth(
        config,
        train_loader,
        val_loader,
        loop,
        num_layers=config.depth,
        deep_supervision=deep_supervision,
        seed=seed,
        device=device,
        log_fn=log_fn,
    )


def train_full_depth(
    config: LEGOConfig,
    train_loader: Iterable[Batch],
    val_loader: Iterable[Batch],
    loop: LegoLoopParams,
    *,
    num_layers: int,
    max_train_tokens: int | None = None,
    deep_supervision: bool = False,
    seed: int = 0,
    device: torch.device | str = "cpu",
    log_fn: LogFn | None = None,
) -> tuple[LEGOTransformer, dict[str, float]]:
    """A standard causal model of ``num_layers`` layers (``config``'s width, one exit at its top), early-stopped.

    Phase 1 is this at ``config``'s own depth; the baseline is this at the deep model's depth. Set
    ``max_train_tokens`` to the LEGO run's token budget (phase-1 train_tokens + phase-2 train_tokens) for a
    same-budget comparison.
    """
    full_cfg = config.derive(
        num_hidden_layers=num_layers, exit_layers=[num_layers], exit_layer=num_layers, routing_threshold=None
    )
    model = to_device(build_lego_model(full_cfg, seed), device)
    depth = model.config.depth
    stages = deep_supervision_stages(depth) if deep_supervision else standard_stages(depth)
    trainer = Trainer(stages, model.config.vocab_size, device)
    optimizer = trainer.create_optimizer(model, loop.learning_rate, loop.weight_decay)
    result = trainer.train_with_early_stopping(
        model,
        train_loader,
        val_loader,
        optimizer,
        loop,
        loop_schedule(loop),
        log_fn,
        max_train_tokens=max_train_tokens,
    )
    full = Trainer(standard_stages(depth), model.config.vocab_size, device)
    val = full.evaluate(model, val_loader)
    return model, {**result, "val_acc": val["acc"], "val_ppl": val["ppl"], "params": float(count_parameters(model))}


def train_joint_exit(
    config: LEGOConfig,
    train_loader: Iterable[Batch],
    val_loader: Iterable[Batch],
    loop: LegoLoopParams,
    *,
    num_layers: int,
    exit_layer: int,
    exit_weight: float,
    max_train_tokens: int | None = None,
    seed: int = 0,
    device: torch.device | str = "cpu",
    log_fn: LogFn | None = None,
) -> tuple[LEGOTransformer, dict[str, float]]:
    """A LayerSkip-style baseline: LEGO's architecture (exit after ``exit_layer``) trained end to end from scratch.

    Loss: the final exit's plus ``exit_weight`` x the early exit's, nothing frozen; early-stopped on that
    objective on val. Routing is LEGO's own (same class), so the two compare at any exit share.
    """
    joint_cfg = config.derive(
        num_hidden_layers=num_layers,
        exit_layers=[exit_layer, num_layers],
        exit_layer=exit_layer,
        routing_threshold=None,
    )
    model = to_device(build_lego_model(joint_cfg, seed), device)
    trainer = Trainer([(exit_layer, exit_layer, exit_weight), (num_layers, num_layers, 1.0)], config.vocab_size, device)
    optimizer = trainer.create_optimizer(model, loop.learning_rate, loop.weight_decay)
    result = trainer.train_with_early_stopping(
        model, train_loader, val_loader, optimizer, loop, loop_schedule(loop), log_fn, max_train_tokens=max_train_tokens
    )
    return model, {**result, "params": float(count_parameters(model))}


def train_phase2(
    source_model: LEGOTransformer,
    hard_examples: HardExampleSets,
    train_items: Sequence[EncodedRecord],
    val_loader: Iterable[Batch],
    params: LegoPhase2Params,
    *,
    num_layers: int,
    pad_id: int,
    seed: int = 0,
    device: torch.device | str = "cpu",
    log_fn: LogFn | None = None,
) -> tuple[LEGOTransformer, dict[str, float]]:
    """Phase 2: extend to ``num_layers`` (lower frozen), train the upper block on the hard examples' sequences.

    The loss is the full-depth next-token loss on response tokens, hard tokens weighted 1 and the others
    ``params.easy_weight``; early stopping on the val full-depth loss (unweighted). The lower block's
    states are recomputed without grad in every step (it is frozen). Returns the extended model and the
    loop's metrics plus ``train_positions`` (padded positions of the hard-example batches).
    """
    if hard_examples["train"]["targets"].numel() == 0:
        raise ValueError("hard_examples: the train set is empty; raise hard_example_ratio or the caps")
    vocab = source_model.config.vocab_size
    model = LEGOTransformer.extend_from(source_model, num_layers, None, freeze_lower=True, seed=seed)
    to_device(model, device)
    train = create_hard_example_loader(
        hard_examples["train"], train_items, params.batch_size, pad_id, params.easy_weight, seed
    )
    trainer = Trainer(standard_stages(num_layers), vocab, device)
    optimizer = trainer.create_optimizer(model, params.learning_rate, params.weight_decay)
    result = trainer.train_with_early_stopping(
        model, train, val_loader, optimizer, params, loop_schedule(params), log_fn
    )
    return model, {
        **result,
        "train_positions": float(train.positions),
        "trainable_params": float(count_parameters(model, trainable_only=True)),
        "params": float(count_parameters(model)),
    }


def loop_schedule(loop: LegoLoopParams) -> Schedule:
    """Linear warm-up, constant, then linear decay to 0 over the last ``decay_fraction`` of ``max_steps``."""
    if loop.max_steps is None or not loop.decay_fraction:
        warmup = loop.warmup_steps
        return lambda step: warmup_factor(step, warmup)
    return wsd_schedule(loop.max_steps, loop.warmup_steps, loop.decay_fraction)


__all__ = [
    "HARD_KEYS",
    "HardExampleSets",
    "HardExamples",
    "HardSequenceBatches",
    "LossStage",
    "Trainer",
    "collect_hard_examples",
    "create_hard_example_loader",
    "deep_supervision_stages",
    "evaluate_on_hard_examples",
    "hard_examples_nbytes",
    "hard_tensors",
    "indexed_batches",
    "load_hard_examples",
    "loop_schedule",
    "prepare_hard_examples",
    "save_hard_examples",
    "standard_stages",
    "train_full_depth",
    "train_joint_exit",
    "train_phase1",
    "train_phase2",
    "train_upper_layers",
]
