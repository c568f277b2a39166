"""A user's own question/answer data (local JSONL, or a hub dataset with a network) as task `user`.

The answer field holds the reference solution; `answer_pattern` (a regex with one group, e.g. GSM8K's
``####\\s*(-?[\\d,\\.]+)``) extracts the canonical answer from it, and the same pattern reads a model's
output, so both go through one verifier.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any

from cascadelab.config import UserDatasetParams


class RegexVerifier:
    """Extracts the final answer with a regex (its last match) and compares it exactly."""

    name = "user"

    def __init__(self, pattern: str) -> None:
        try:
            self.pattern = re.compile(pattern)
        except re.error as error:
            raise ValueError(f"answer_pattern: not a valid regex ({error})") from None
        if self.pattern.groups != 1:
            raise ValueError(f"answer_pattern: needs exactly one capture group (has {self.pattern.groups})")

    def extract(self, output: str) -> str | None:
        """The last match's group, normalised (commas dropped, trailing `.0` removed)."""
        matches = self.pattern.findall(output)
        if not matches:
            return None
        value = str(matches[-1]).replace(",", "").strip()
        return value[:-2] if value.endswith(".0") else value

    def verify(self, output: str, answer: str) -> bool:
        """True when the extracted answer equals `answer`."""
        extracted = self.extract(output)
        return extracted is not None and extracted == answer


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{number}: not valid JSON ({error.msg})") from None
    return rows


def load_user_rows(params: UserDatasetParams) -> list[dict[str, Any]]:
    """Rows of the user's dataset: a local JSONL file, or a hub dataset through `datasets.load_dataset`."""
    if params.path is not None:
        path = Path(params.path)
        if not path.is_file():
            raise ValueError(f"prepare.user_dataset.path: file not found: {path}")
        if path.suffix in {".jsonl", ".json"}:
            return _read_jsonl(path)
        from datasets import load_dataset

        return list(load_dataset(str(path), split="train"))
    from datasets import load_dataset

    return list(load_dataset(params.hf_name, params.hf_config, split="train"))


def user_records(params: UserDatasetParams, seed: int) -> dict[str, list[dict[str, Any]]]:
    """Convert the user's rows into corpus records split into train/val/test (deterministic in `seed`)."""
    verifier = RegexVerifier(params.answer_pattern)
    rows = load_user_rows(params)
    records, seen = [], set()
    for number, row in enumerate(rows, start=1):
        for field in (params.question_field, params.answer_field):
            if field not in row:
                raise ValueError(f"prepare.user_dataset: row {number} has no field {field!r}")
        question, solution = str(row[params.question_field]), str(row[params.answer_field])
        answer = verifier.extract(solution)
        if answer is None:
            raise ValueError(f"prepare.user_dataset.answer_pattern: no match in row {number}'s {params.answer_field!r}")
        key = " ".join(question.lower().split())
        if key in seen:
            continue
        seen.add(key)
        records.append(
            {
                "task": "user",
                "difficulty": 1,
                "prompt": question,
                "response": solution,
                "answer": answer,
                "steps": solution,
            }
        )
    random.Random(f"{seed}:user").shuffle(records)
    n_test = max(1, round(len(records) * params.test_fraction))
    n_val = max(1, round(len(records) * params.val_fraction))
    if len(records) < n_test + n_val + 1:
        raise ValueError(f"prepare.user_dataset: {len(records)} distinct questions are too few to split")
    splits = {"test": records[:n_test], "val": records[n_test : n_test + n_val], "train": records[n_test + n_val :]}
    for split, items in splits.items():
        for index, record in enumerate(items):
            record["id"] = f"user-{split}-{index:06d}"
    return splits
