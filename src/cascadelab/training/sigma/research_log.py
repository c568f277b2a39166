"""Research log: one JSON line per research cycle (hypothesis, change, expected effect, measured effect).

Cycle n (1-based) is written as ``{"cycle": n, "hypothesis": ..., "change": ..., "expected": ...,
"measured": ...}`` with sorted keys and no timestamp, so the same cycles give the same bytes. Each
`record` rewrites the whole file through a temporary file and a rename (:func:`cascadelab.io.atomic_write_text`):
a reader sees the old file or the new one, never half a line, and a crash mid-write loses at most the
cycle being written. The stage logs the file as an MLflow artifact. `effective_calls` counts records.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cascadelab.io import atomic_write_text


class ResearchLog:
    """Append-only JSONL record of research cycles, written atomically."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.effective_calls = 0

    def cycles(self) -> list[dict[str, Any]]:
        """The cycles recorded so far, in order (none when the file does not exist)."""
        if not self.path.is_file():
            return []
        return [json.loads(line) for line in self.path.read_text(encoding="utf-8").splitlines() if line]

    def record(self, hypothesis: str, change: Any, expected: Any, measured: Any) -> dict[str, Any]:
        """Append one cycle (values must be JSON-serialisable) and return it."""
        existing = self.path.read_text(encoding="utf-8") if self.path.is_file() else ""
        cycle = {
            "cycle": sum(1 for line in existing.splitlines() if line) + 1,
            "hypothesis": hypothesis,
            "change": change,
            "expected": expected,
            "measured": measured,
        }
        line = json.dumps(cycle, sort_keys=True, ensure_ascii=False, allow_nan=False)
        atomic_write_text(self.path, existing + line + "\n")
        self.effective_calls += 1
        return cycle
