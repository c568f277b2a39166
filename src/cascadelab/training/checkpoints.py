"""Where a stage keeps resumable checkpoints: outside DVC's outputs, keyed by everything that shapes the run."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

CHECKPOINT_ROOT = Path(".cache/checkpoints")


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def checkpoint_dir(stage: str, settings: dict[str, Any], inputs: list[Path]) -> Path:
    """A folder for `stage`'s checkpoints that only a run with the same settings and input files reuses."""
    material = json.dumps(
        {"settings": settings, "inputs": {str(p): file_digest(p) for p in inputs}}, sort_keys=True, default=str
    )
    return CHECKPOINT_ROOT / f"{stage}-{hashlib.sha256(material.encode()).hexdigest()[:16]}"


def discard(folder: Path) -> None:
    """Remove a finished run's checkpoints."""
    shutil.rmtree(folder, ignore_errors=True)
