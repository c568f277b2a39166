"""Files shared by the cascade stages: the frozen coarse model, the corpus splits, the pairs JSONL, the control.

Every stage reads the frozen coarse model saved by `coarse_sft` (`models/coarse`, its tokenizer beside it)
and the corpus of `prepare`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerBase

from cascadelab.data.corpus import CorpusVerifier, load_meta, load_split, write_jsonl
from cascadelab.data.tokenizer import load_tokenizer
from cascadelab.data.user_task import skip_user
from cascadelab.io import atomic_directory, write_json

Record = dict[str, Any]
PAIR_SPLITS = ("train", "val")
DISABLED = "disabled.json"  # what a disabled optional model's folder holds (DVC outs must exist)


@dataclass
class StageOutcome:
    """A cascade stage's metrics, its curves (name → rows, one TSV each) and a prediction sample.

    Undefined rates (e.g. a break rate over no coarse-right items) are dropped from `metrics`, so the
    metrics file stays strict JSON; the curves keep them as empty cells.
    """

    metrics: dict[str, Any]
    curves: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    predictions: list[dict[str, Any]] = field(default_factory=list)
    items: list[dict[str, Any]] = field(default_factory=list)  # per test item rows (plots/<stage>/items.jsonl)

    def __post_init__(self) -> None:
        self.metrics = {k: v for k, v in self.metrics.items() if not (isinstance(v, float) and math.isnan(v))}


@dataclass
class CascadeInputs:
    """The frozen coarse model with its tokenizer, the corpus meta and its verifier."""

    coarse: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    meta: dict[str, Any]
    verifier: CorpusVerifier
    corpus_dir: Path

    def split(self, name: str) -> list[Record]:
        """Records of one corpus split."""
        return skip_user("cascade", load_split(self.corpus_dir, name), CASCADE_SKIPS_USER)


def load_model(folder: str | Path) -> PreTrainedModel:
    """A saved causal LM (`from_pretrained`), in eval mode, with its gradients off."""
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder}: no saved model (run the stage that writes it)")
    model = AutoModelForCausalLM.from_pretrained(str(folder))
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model


CASCADE_SKIPS_USER = (
    "the cascade's pairs, router and refiner are built on the generated families' answer formats "
    "(coarse_sft trains and evaluates task user)"
)


def load_inputs(corpus_dir: str | Path, coarse_dir: str | Path, num_threads: int) -> CascadeInputs:
    """The coarse model saved by `coarse_sft` (its tokenizer saved beside it) and the corpus it trained on."""
    torch.set_num_threads(num_threads)
    corpus_dir = Path(corpus_dir)
    meta = load_meta(corpus_dir)
    coarse = load_model(coarse_dir)
    return CascadeInputs(coarse, load_tokenizer(coarse_dir), meta, CorpusVerifier(meta), corpus_dir)


def write_pairs(folder: str | Path, pairs: dict[str, list[Record]]) -> None:
    """One JSONL file per split (`train.jsonl`, `val.jsonl`), each written atomically."""
    for split, rows in pairs.items():
        write_jsonl(Path(folder) / f"{split}.jsonl", rows)


def read_pairs(folder: str | Path, split: str) -> list[Record]:
    """The pairs of one split written by `cascade_pairs`."""
    path = Path(folder) / f"{split}.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing (run the cascade_pairs stage)")
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def save_control(model: PreTrainedModel | None, tokenizer: Any, folder: Path) -> None:
    """Write `coarse_more` like the coarse model (`save_pretrained` + tokenizer), or a marker when disabled."""
    with atomic_directory(folder) as tmp:
        if model is None:
            write_json(tmp / DISABLED, {"enabled": False})
            return
        model.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))


def load_control(folder: Path) -> PreTrainedModel | None:
    """The saved control, or None when the refiner stage ran with `control.enabled: false`."""
    return None if (folder / DISABLED).is_file() else load_model(folder)
