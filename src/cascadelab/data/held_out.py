"""The test split's guard: only a stage's final evaluation may open it.

A stage wraps its final evaluation in ``with final_evaluation("<stage>"):``; :func:`check_read` (called by
``corpus.load_split`` for every split it opens) refuses the test split anywhere else, in one line.
``tests/unit/data/test_held_out_guard.py`` checks statically that ``final_evaluation`` is entered only at
the call sites it lists, one final evaluation per stage.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

HELD_OUT = "test"
_evaluating: ContextVar[str | None] = ContextVar("cascadelab_final_evaluation", default=None)


@contextmanager
def final_evaluation(stage: str) -> Iterator[None]:
    """Mark the block that is `stage`'s final evaluation: the only place the test split may be read."""
    token = _evaluating.set(stage)
    try:
        yield
    finally:
        _evaluating.reset(token)


def check_read(path: Path, split: str) -> None:
    """Refuse to open the test split outside a final evaluation, naming the file."""
    if split == HELD_OUT and _evaluating.get() is None:
        raise PermissionError(
            f"{path}: the test split is read only inside a stage's final evaluation "
            "(cascadelab.data.held_out.final_evaluation)"
        )
