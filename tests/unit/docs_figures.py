"""Checks that a measured figure quoted in README.md or docs/ is what its metrics/ or plots/ file says."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Figure:
    """A figure as a page writes it: `template` formatted with `key` of `source` (times `scale`)."""

    page: str
    source: str
    key: str
    template: str
    scale: float = 1.0

    def expected(self, root: Path) -> str:
        """The text the page must contain, from the committed source file."""
        value = json.loads((root / self.source).read_text(encoding="utf-8"))
        for part in self.key.split("."):
            value = value[part]
        return self.template.format(float(value) * self.scale)


def disagreements(figures: list[Figure], root: Path) -> list[str]:
    """One line per figure whose page does not contain the text its source file gives."""
    lines = []
    for figure in figures:
        expected = figure.expected(root)
        if expected not in (root / figure.page).read_text(encoding="utf-8"):
            lines.append(f"{figure.page}: expected {expected!r} from {figure.source} {figure.key}")
    return lines
