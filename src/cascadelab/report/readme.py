"""README.md's Results block is a copy of docs/results.md's marked block: write it, or check it is in sync.

PYTHONPATH=src python -m cascadelab.report.readme           # copy the block into README.md (make readme)
PYTHONPATH=src python -m cascadelab.report.readme --check   # exit 1 when README.md's block differs
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cascadelab.io import atomic_write_text
from cascadelab.report.results_page import BEGIN, END


def marked_block(text: str, source: str) -> str:
    """The text from the BEGIN marker through the END marker; ValueError naming `source` when either is missing."""
    start, stop = text.find(BEGIN), text.find(END)
    if start < 0 or stop < start:
        raise ValueError(f"{source}: no generated results block (the lines {BEGIN!r} ... {END!r})")
    return text[start : stop + len(END)]


def spliced(readme: str, block: str) -> str:
    """`readme` with its results block replaced by `block`."""
    old = marked_block(readme, "README.md")
    return readme.replace(old, block, 1)


def main(argv: list[str] | None = None) -> int:
    """Copy docs/results.md's block into README.md, or with --check report whether it is already there."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check; exit 1 when README.md is out of date")
    parser.add_argument("--readme", type=Path, default=Path("README.md"))
    parser.add_argument("--results", type=Path, default=Path("docs/results.md"))
    args = parser.parse_args(argv)
    try:
        block = marked_block(args.results.read_text(encoding="utf-8"), str(args.results))
        readme = args.readme.read_text(encoding="utf-8")
        new = spliced(readme, block)
    except (OSError, ValueError) as error:
        print(f"readme: {error}", file=sys.stderr)
        return 2
    if args.check:
        if new != readme:
            print(f"readme: {args.readme}'s results block differs from {args.results} (run `make readme`)")
            return 1
        return 0
    if new != readme:
        atomic_write_text(args.readme, new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
