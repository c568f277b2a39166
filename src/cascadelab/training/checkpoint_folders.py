"""Checkpoint folders that are complete or ignored, for both checkpoint paths (TRL stages and the LM trainer).

A checkpoint is written into a staging folder; a manifest of every file's size and sha256 is written
last; then the folder is renamed to its final name, so a folder under that name was written whole. At
load the manifest is checked again: a checkpoint with a missing, truncated or altered file (or no
manifest: a kill before the rename, an older format) is skipped with one printed line, and the previous
one is used. Only the newest few are kept.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from cascadelab.io import atomic_write_text
from cascadelab.ranks import is_main_process
from cascadelab.training.checkpoints import file_digest

MANIFEST = "manifest.json"


class CheckpointError(ValueError):
    """A whole checkpoint that cannot continue this run exactly (its curriculum, sampler or curve state is missing)."""


def refuse(folder: Path, what: str) -> CheckpointError:
    """The one-line refusal of checkpoint `folder`: what it lacks, and how to start over."""
    return CheckpointError(
        f"checkpoint {folder}: {what}, so it cannot resume this run exactly; "
        f"delete {folder.parent} to train from step 0"
    )


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.relative_to(folder).as_posix() != MANIFEST)


def write_manifest(folder: Path) -> None:
    """List every file under `folder` with its size and sha256 in `folder/manifest.json` (written last)."""
    files = {
        path.relative_to(folder).as_posix(): {"bytes": path.stat().st_size, "sha256": file_digest(path)}
        for path in _files(folder)
    }
    atomic_write_text(folder / MANIFEST, json.dumps({"files": files}, indent=1, sort_keys=True) + "\n")


def problem(folder: Path) -> str | None:
    """Why `folder` is not a whole checkpoint (None: every file its manifest lists is there, unchanged)."""
    try:
        listed = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))["files"]
        entries = {str(name): (int(entry["bytes"]), str(entry["sha256"])) for name, entry in listed.items()}
    except FileNotFoundError:
        return f"no {MANIFEST}"
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return f"{MANIFEST} is unreadable"
    for name, (size, digest) in sorted(entries.items()):
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != size:
            return f"{name} has {path.stat().st_size} bytes, the manifest says {size}"
        if file_digest(path) != digest:
            return f"{name} does not match its sha256"
    return None


def publish(staging: Path, final: Path) -> None:
    """Write `staging`'s manifest, then rename it to `final` (replacing a stale checkpoint of that name)."""
    write_manifest(staging)
    if final.exists():
        shutil.rmtree(final)
    os.replace(staging, final)


def newest_whole(folders: Sequence[Path]) -> Path | None:
    """The newest of `folders` (given oldest first) that passes its manifest; each one skipped prints one line."""
    for index in reversed(range(len(folders))):
        reason = problem(folders[index])
        if reason is None:
            return folders[index]
        if is_main_process():
            fallback = f"checkpoint {folders[index - 1].name}" if index else "step 0"
            print(f"checkpoint {folders[index]} is incomplete ({reason}); falling back to {fallback}", flush=True)
    return None


def prune(folders: Sequence[Path], steps: Sequence[int], keep: int, current: int) -> None:
    """Delete all but the newest `keep` of `folders` (at `steps`), and any past step `current` (a lost timeline)."""
    behind = [folder for folder, step in zip(folders, steps, strict=True) if step <= current]
    ahead = [folder for folder, step in zip(folders, steps, strict=True) if step > current]
    for folder in [*behind[:-keep], *ahead]:
        shutil.rmtree(folder, ignore_errors=True)
