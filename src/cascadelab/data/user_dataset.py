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
from cascadelab.config.params import describe_value


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


def _read_jsonl(path: Path) -> list[tuple[str, Any]]:
    """Each non-blank line's JSON value with its `<file>:<line>` (1-based, blank lines counted)."""
    rows = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                rows.append((f"{path}:{number}", json.loads(line)))
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{number}: not valid JSON ({error.msg} at column {error.colno})") from None
    return rows


def load_user_rows(params: UserDatasetParams) -> list[tuple[str, Any]]:
    """Rows of the user's dataset, each with where it comes from: a local JSONL file's `<file>:<line>`, or a
    hub dataset's `<name> row <n>` (through `datasets.load_dataset`)."""
    if params.path is not None:
        path = Path(params.path)
        if not path.is_file():
            raise ValueError(f"prepare.user_dataset.path: file not found: {path}")
        if path.suffix in {".jsonl", ".json"}:
            return _read_jsonl(path)
        from datasets import load_dataset

        rows = load_dataset(str(path), split="train")
        return [(f"{path} row {number}", row) for number, row in enumerate(rows, start=1)]
    from datasets import load_dataset

    rows = load_dataset(params.hf_name, params.hf_config, split="train")
    return [(f"{params.hf_name} row {number}", row) for number, row in enumerate(rows, start=1)]


def row_texts(where: str, row: Any, params: UserDatasetParams) -> tuple[str, str]:
    """The (question, solution) strings of one row; ValueError `<where>: <problem>` naming the bad field."""
    fields = (params.question_field, params.answer_field)
    if not isinstance(row, dict):
        names = " and ".join(f'"{name}"' for name in fields)
        raise ValueError(f"{where}: expected a JSON object with fields {names}, got {describe_value(row)}")
    for name in fields:
        if name not in row:
            raise ValueError(f'{where}: missing field "{name}"')
        if not isinstance(row[name], str):
            raise ValueError(f'{where}: field "{name}" must be a string, got {describe_value(row[name])}')
    return row[params.question_field], row[params.answer_field]


def user_records(params: UserDatasetParams, seed: int) -> dict[str, list[dict[str, Any]]]:
    """Convert the user's rows into corpus records split into train/val/test (deterministic in `seed`).

    Every bad row stops with one line naming its file and line (see `row_texts`), before anything is written.
    """
    verifier = RegexVerifier(params.answer_pattern)
    records, seen = [], set()
    for where, row in load_user_rows(params):
        question, solution = row_texts(where, row, params)
        answer = verifier.extract(solution)
        if answer is None:
            raise ValueError(
                f'{where}: prepare.user_dataset.answer_pattern "{params.answer_pattern}" finds no answer '
                f'in field "{params.answer_field}"'
            )
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
