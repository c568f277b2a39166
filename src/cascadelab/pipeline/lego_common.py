"""What the three LEGO stages share: their outcome, curve logging, saved records, FLOPs.

Splits are kept apart as the issue asks: phase 1 trains on train and early-stops on val; the
confidence threshold is calibrated on val and the hard examples are collected from train (val hard
examples only drive phase 2's early stopping); everything reported as ``test`` is measured on test.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import PreTrainedTokenizerBase

from cascadelab.data.cell_batches import EncodedRecord, encode_records
from cascadelab.data.corpus import load_split
from cascadelab.data.user_task import GENERATED_ONLY, skip_user
from cascadelab.io import atomic_directory, write_json
from cascadelab.models.lego import LEGOConfig, LEGOTransformer
from cascadelab.models.lego.flops import layer_flops

HARD_FILE = "hard_examples.safetensors"
RECORD_FILE = "lego_training.json"  # what a later LEGO stage needs to know about how this one trained
LogFn = Callable[[dict[str, float], int], None]


@dataclass
class LegoOutcome:
    """Metrics of one LEGO stage and its curves (name → rows, one TSV file each)."""

    metrics: dict[str, Any]
    curves: dict[str, list[dict[str, float]]] = field(default_factory=dict)


class CurveLog:
    """Collects a training loop's log calls into curves and forwards them to ``log_fn``.

    Rows go to ``<prefix>val`` when they hold a val metric, else ``<prefix>train``; with ``name``
    set, all rows go to that one curve.
    """

    def __init__(self, prefix: str, log_fn: LogFn | None, step_name: str = "step", name: str | None = None) -> None:
        self.prefix, self.log_fn, self.step_name, self.name = prefix, log_fn, step_name, name
        self.curves: dict[str, list[dict[str, float]]] = {}

    def __call__(self, metrics: dict[str, float], step: int) -> None:
        """Record one logged row and forward it, prefixed, to `log_fn`."""
        name = self.name or ("val" if any(k.startswith("val") for k in metrics) else "train")
        self.curves.setdefault(f"{self.prefix}{name}", []).append({self.step_name: float(step), **metrics})
        if self.log_fn is not None:
            self.log_fn({f"{self.prefix}{k}": v for k, v in metrics.items()}, step)


def encoded_split(corpus_dir: Path, split: str, tokenizer: PreTrainedTokenizerBase) -> list[EncodedRecord]:
    """The records of one corpus split, encoded for the LEGO loops."""
    return encode_records(skip_user("lego", load_split(corpus_dir, split), GENERATED_ONLY), tokenizer)


def load_lego(path: Path) -> LEGOTransformer:
    """A saved LEGO model in eval mode; a clear error when the folder holds another model."""
    model = LEGOTransformer.from_pretrained(str(path))
    if not isinstance(model, LEGOTransformer):
        raise ValueError(f"{path}: not a LEGO model ({type(model).__name__})")
    return model.eval()


def save_lego(model: LEGOTransformer, tokenizer: PreTrainedTokenizerBase, folder: Path, record: dict[str, Any]) -> None:
    """Save the model, its tokenizer and the training record a later LEGO stage reads, atomically."""
    with atomic_directory(folder) as tmp:
        model.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
        write_json(tmp / RECORD_FILE, record)


def read_record(folder: Path) -> dict[str, Any]:
    """The training record an earlier LEGO stage saved in `folder`."""
    path = folder / RECORD_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing (rerun the stage that writes {folder})")
    return dict(json.loads(path.read_text()))


def forward_flops_per_token(config: LEGOConfig) -> dict[str, float]:
    """Forward FLOPs per token of a causal layer, its key/value projections alone and an exit head (matmuls only)."""
    per = layer_flops(config)
    return {"causal_layer": per["layer"], "kv": per["kv"], "head": per["head"]}


def causal_training_flops(positions: int, layers: int, per_token: dict[str, float]) -> float:
    """Forward + backward (3x forward) FLOPs of training a causal model on ``positions`` padded positions."""
    return 3.0 * positions * (layers * per_token["causal_layer"] + per_token["head"])
