"""The `code` task family: prompts asking for a short Python expression or one-line lambda meeting a spec.

Every item carries its gold solution (`response`) and a reference that the RL stage builds a `CodeSpec` from: test
expressions on ``candidate`` (the model's expression) with their expected values, and the integer
literals the answer must use (for "an expression using 6 and 7", the 6 and the 7). Three levels:

1. two-number expressions (``6*7``, ``6+7``) and one-operation lambdas (``lambda x:x*2``, ``lambda x:x+3``);
2. three-number expressions (``3*4+5``), two-operation lambdas (``lambda x:x*3+2``) and subtraction;
3. two-argument lambdas (``lambda x,y:x+y+4``, ``lambda x,y:x*y``) and squares (``lambda x:x*x+1``).

Prompts and solutions use only characters of the corpus's char tokenizer (no parentheses); test
expressions never reach the tokenizer (they run in the sandbox). The family is written by `prepare`
to its own folder (``data/code_tasks``), so the corpus and tokenizer bytes do not change.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datasets import Dataset

from cascadelab.data.corpus import SPLITS, Record, _cell_sizes, _check_disjoint, load_split
from cascadelab.io import write_json

TASK = "code"
LEVELS = (1, 2, 3)
_ARGS = (0, 1, 2, 5, -3)  # inputs of every one-argument lambda test
_PAIRS = ((0, 0), (1, 2), (3, 5), (-2, 4))


@dataclass(frozen=True)
class CodeItem:
    """One code task before it gets an id and a split."""

    template: str
    prompt: str
    solution: str
    tests: tuple[tuple[str, int], ...]
    required: tuple[int, ...] = ()


def _unary(template: str, prompt: str, solution: str, fn: Any) -> CodeItem:
    return CodeItem(template, prompt, solution, tuple((f"candidate({x})", int(fn(x))) for x in _ARGS))


def _binary(template: str, prompt: str, solution: str, fn: Any) -> CodeItem:
    return CodeItem(template, prompt, solution, tuple((f"candidate({x}, {y})", int(fn(x, y))) for x, y in _PAIRS))


def _expression(template: str, numbers: tuple[int, ...], solution: str, value: int) -> CodeItem:
    used = " ".join(str(n) for n in numbers[:-1]) + f" and {numbers[-1]}"
    return CodeItem(
        template,
        f"an expression using {used} that equals {value}=",
        solution,
        (("candidate", value),),
        tuple(sorted(set(numbers))),
    )


def level_items(level: int) -> list[CodeItem]:
    """Every item of `level`, in a fixed order (the split shuffles them with the seed)."""
    items: list[CodeItem] = []
    if level == 1:
        for a in range(2, 13):
            for b in range(2, 13):
                items.append(_expression("expr_mul", (a, b), f"{a}*{b}", a * b))
                items.append(_expression("expr_add", (a, b), f"{a}+{b}", a + b))
        items.append(_unary("lambda_double", "a lambda that doubles its argument=", "lambda x:x*2", lambda x: 2 * x))
        for k in range(1, 21):
            items.append(
                _unary(
                    "lambda_add", f"a lambda that adds {k} to its argument=", f"lambda x:x+{k}", lambda x, k=k: x + k
                )
            )
        for k in range(3, 13):
            items.append(
                _unary(
                    "lambda_mul",
                    f"a lambda that multiplies its argument by {k}=",
                    f"lambda x:x*{k}",
                    lambda x, k=k: x * k,
                )
            )
    elif level == 2:
        for a in range(2, 10):
            for b in range(2, 10):
                for c in range(1, 10):
                    items.append(_expression("expr3", (a, b, c), f"{a}*{b}+{c}", a * b + c))
        for k in range(2, 10):
            for m in range(1, 10):
                items.append(
                    _unary(
                        "lambda_affine",
                        f"a lambda that multiplies its argument by {k} and adds {m}=",
                        f"lambda x:x*{k}+{m}",
                        lambda x, k=k, m=m: x * k + m,
                    )
                )
        for k in range(1, 21):
            items.append(
                _unary(
                    "lambda_sub",
                    f"a lambda that subtracts {k} from its argument=",
                    f"lambda x:x-{k}",
                    lambda x, k=k: x - k,
                )
            )
    elif level == 3:
        items.append(
            _binary("lambda2_add", "a lambda that adds its two arguments=", "lambda x,y:x+y", lambda x, y: x + y)
        )
        items.append(
            _binary("lambda2_mul", "a lambda that multiplies its two arguments=", "lambda x,y:x*y", lambda x, y: x * y)
        )
        for k in range(1, 21):
            items.append(
                _binary(
                    "lambda2_add_k",
                    f"a lambda that adds its two arguments and {k}=",
                    f"lambda x,y:x+y+{k}",
                    lambda x, y, k=k: x + y + k,
                )
            )
            items.append(
                _unary(
                    "lambda_square",
                    f"a lambda that squares its argument and adds {k}=",
                    f"lambda x:x*x+{k}",
                    lambda x, k=k: x * x + k,
                )
            )
    else:
        raise ValueError(f"prepare.code.levels: each level must be 1, 2 or 3 (got {level})")
    unique: dict[str, CodeItem] = {}
    for item in items:  # "using 2 and 2 that equals 4" is both a sum and a product: keep the first
        unique.setdefault(item.prompt, item)
    return list(unique.values())


def build_code_splits(levels: Iterable[int], train: int, val: int, test: int, seed: int) -> dict[str, list[Record]]:
    """Disjoint train/val/test records of the given levels; val and test are carved first, seeded."""
    splits: dict[str, list[Record]] = {name: [] for name in SPLITS}
    for level in levels:
        items = level_items(level)
        random.Random(f"{seed}:code:{level}").shuffle(items)
        n_train, n_val, n_test = _cell_sizes(len(items), train, val, test)
        parts = {
            "test": items[:n_test],
            "val": items[n_test : n_test + n_val],
            "train": items[n_test + n_val : n_test + n_val + n_train],
        }
        for split, part in parts.items():
            splits[split].extend(_record(item, level, split, i) for i, item in enumerate(part))
    for split in SPLITS:
        random.Random(f"{seed}:code:shuffle:{split}").shuffle(splits[split])
    _check_disjoint(splits)
    return splits


def _record(item: CodeItem, level: int, split: str, index: int) -> Record:
    return {
        "id": f"{TASK}{level}-{split}-{index:06d}",
        "task": TASK,
        "template": item.template,
        "difficulty": level,
        "prompt": item.prompt,
        "response": item.solution,
        "answer": item.solution,
        "tests": [{"expression": e, "expected": v} for e, v in item.tests],
        "required": list(item.required),
    }


def write_code_tasks(splits: dict[str, list[Record]], folder: Path) -> None:
    """Write the splits as JSONL through `datasets`, and meta.json (call inside an atomic folder)."""
    folder.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        path = folder / f"{split}.jsonl"
        if splits[split]:
            Dataset.from_list(splits[split]).to_json(str(path), lines=True, force_ascii=False)
        else:
            path.write_text("")  # the family is off: an empty split
    counts = {
        split: {f"{TASK}{lv}": sum(r["difficulty"] == lv for r in rows) for lv in LEVELS}
        for split, rows in splits.items()
    }
    write_json(folder / "meta.json", {"task": TASK, "counts": counts})


def load_code_split(folder: str | Path, split: str) -> list[Record]:
    """Read one split of the code family back as records."""
    return load_split(folder, split)


__all__ = [
    "LEVELS",
    "TASK",
    "CodeItem",
    "build_code_splits",
    "level_items",
    "load_code_split",
    "write_code_tasks",
]
