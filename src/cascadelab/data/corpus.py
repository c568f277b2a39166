"""Build, write and read the corpus splits; dispatch verification by task.

The corpus folder holds `train.jsonl`, `val.jsonl`, `test.jsonl` (written through `datasets`) and
`meta.json`, which records how answers are written so later stages verify without reading `prepare`'s
params.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

from datasets import Dataset, load_dataset

from cascadelab.config import PrepareParams
from cascadelab.data.held_out import check_read
from cascadelab.data.tasks import Item, get_family
from cascadelab.data.user_dataset import RegexVerifier, user_records
from cascadelab.io import atomic_write_text, write_json

SPLITS = ("train", "val", "test")
TEXT_FIELDS = ("prompt", "response", "steps")  # the fields the tokenizer is trained on and must round-trip
Record = dict[str, Any]


class Verifier(Protocol):
    """Anything that extracts and checks a final answer."""

    def extract(self, output: str) -> str | None:
        """The canonical answer in `output`, or None."""
        ...

    def verify(self, output: str, answer: str) -> bool:
        """Whether `output` answers `answer`."""
        ...


def normalise_prompt(prompt: str) -> str:
    """The dedup key: lowercase with collapsed whitespace."""
    return " ".join(prompt.lower().split())


def _cell_sizes(available: int, train: int, val: int, test: int) -> tuple[int, int, int]:
    """Split sizes for one cell; a small cell keeps at most 15 % each for val and test, the rest trains."""
    if available >= train + val + test:
        return train, val, test
    cap = max(1, int(available * 0.15))
    val, test = min(val, cap), min(test, cap)
    return max(0, available - val - test), val, test


def build_splits(params: PrepareParams, seed: int) -> dict[str, list[Record]]:
    """Generate disjoint train/val/test records for every (family, difficulty) cell, deterministically."""
    splits: dict[str, list[Record]] = {name: [] for name in SPLITS}
    sizes = params.sizes
    seen: set[str] = set()  # shared by all cells: levels overlap (1-digit sums are 2-digit sums too)
    for name, family_params in params.families.items():
        family = get_family(name, params.answer_format)
        for difficulty in family_params.difficulties:
            rng = random.Random(f"{seed}:{name}:{difficulty}")
            available = family.space_size(difficulty)
            n_train, n_val, n_test = _cell_sizes(available, sizes.train, sizes.val, sizes.test)
            wanted = n_train + n_val + n_test
            items: list[Item] = []
            attempts = 0
            while len(items) < wanted and attempts < 50 * wanted:
                attempts += 1
                item = family.sample(rng, difficulty)
                key = normalise_prompt(item.prompt)
                if key not in seen:
                    seen.add(key)
                    items.append(item)
            # Test and val are carved first so that a short cell shortens train, never evaluation.
            n_test = min(n_test, len(items))
            n_val = min(n_val, len(items) - n_test)
            parts = {"test": items[:n_test], "val": items[n_test : n_test + n_val], "train": items[n_test + n_val :]}
            for split, part in parts.items():
                for index, item in enumerate(part):
                    splits[split].append(
                        {
                            "id": f"{name}{difficulty}-{split}-{index:06d}",
                            "task": name,
                            "difficulty": difficulty,
                            "prompt": item.prompt,
                            "response": item.response,
                            "answer": item.answer,
                            "steps": item.steps,
                        }
                    )
    if params.user_dataset is not None:
        for split, records in user_records(params.user_dataset, seed).items():
            splits[split].extend(records)
    for split in SPLITS:
        random.Random(f"{seed}:shuffle:{split}").shuffle(splits[split])
    _check_disjoint(splits)
    return splits


def _check_disjoint(splits: dict[str, list[Record]]) -> None:
    owner: dict[str, str] = {}
    for split in SPLITS:
        for record in splits[split]:
            key = normalise_prompt(record["prompt"])
            if owner.setdefault(key, split) != split:
                raise ValueError(f"prompt {record['prompt']!r} is in both {owner[key]} and {split}")


def corpus_meta(params: PrepareParams, splits: dict[str, list[Record]]) -> dict[str, Any]:
    """What later stages need to verify answers, plus the cell counts."""
    counts: dict[str, dict[str, int]] = {}
    for split, records in splits.items():
        for record in records:
            cell = f"{record['task']}{record['difficulty']}"
            counts.setdefault(split, {}).setdefault(cell, 0)
            counts[split][cell] += 1
    meta: dict[str, Any] = {
        "answer_format": params.answer_format,
        "user_answer_pattern": params.user_dataset.answer_pattern if params.user_dataset else None,
        "counts": counts,
    }
    if params.user_dataset is not None:  # absent otherwise, so a corpus without user data keeps its bytes
        user = params.user_dataset
        meta["user"] = {"weight": user.weight, "only": user.only, "generation_margin": user.generation_margin}
    return meta


def write_corpus(splits: dict[str, list[Record]], meta: dict[str, Any], folder: Path) -> None:
    """Write the splits as JSONL through `datasets`, and meta.json (call inside an atomic folder)."""
    folder.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        path = folder / f"{split}.jsonl"
        Dataset.from_list(splits[split]).to_json(str(path), lines=True, force_ascii=False)
    write_json(folder / "meta.json", meta)


def load_split(folder: str | Path, split: str) -> list[Record]:
    """Read one split back as a list of records (through `datasets`); test only in a final evaluation."""
    path = Path(folder) / f"{split}.jsonl"
    check_read(path, split)
    return _read_split(path)


def held_out_prompts(folder: str | Path) -> list[str]:
    """The val then test prompts, without answers: what generated training items must not repeat."""
    return [r["prompt"] for split in ("val", "test") for r in _read_split(Path(folder) / f"{split}.jsonl")]


def val_prompt_records(folder: str | Path) -> list[Record]:
    """The val records' id, task and prompt, without answers (what a context check before training may read).

    The test split's prompts are checked by the final evaluation, the only place that opens it.
    """
    return [{"id": r["id"], "task": r["task"], "prompt": r["prompt"]} for r in load_split(folder, "val")]


def _read_split(path: Path) -> list[Record]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: corpus split not found (run the prepare stage)")
    dataset = load_dataset("json", data_files=str(path), split="train")
    return [dict(row) for row in dataset]


def load_meta(folder: str | Path) -> dict[str, Any]:
    """Read the corpus meta.json."""
    return dict(json.loads((Path(folder) / "meta.json").read_text()))


class CorpusVerifier:
    """Dispatches extraction and verification to each record's task family."""

    def __init__(self, meta: dict[str, Any]) -> None:
        self.answer_format = meta["answer_format"]
        self._verifiers: dict[str, Verifier] = {}
        if meta.get("user_answer_pattern"):
            self._verifiers["user"] = RegexVerifier(meta["user_answer_pattern"])

    def for_task(self, task: str) -> Verifier:
        """The verifier of `task`."""
        if task not in self._verifiers:
            self._verifiers[task] = get_family(task, self.answer_format)
        return self._verifiers[task]

    def verify(self, task: str, output: str, answer: str) -> bool:
        """Whether `output` answers `answer` for a record of `task`."""
        return self.for_task(task).verify(output, answer)


def iter_texts(records: Iterable[Record], fields: Sequence[str] = TEXT_FIELDS) -> Iterable[str]:
    """All text fields of the records, for tokenizer training and round-trip checks."""
    for record in records:
        for field in fields:
            value = record.get(field)
            if value:
                yield str(value)


def write_jsonl(path: str | Path, records: Iterable[Record]) -> None:
    """Write records as JSON lines atomically (for small artifacts such as prediction samples)."""
    atomic_write_text(path, "".join(json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n" for r in records))
