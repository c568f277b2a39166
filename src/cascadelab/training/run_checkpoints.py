"""Atomic, hashed, rotating checkpoints of a training run, and resumption from the newest valid one.

Each checkpoint is ``step-<n>.pt`` (``torch.save`` of the payload) plus ``step-<n>.json`` holding the
file's sha256 and size. Both are written to a temporary file and renamed, the hash last, so a
checkpoint without a matching hash file — truncated, half-written or corrupted — is never trusted:
:meth:`CheckpointStore.latest` skips it with a warning and falls back to the previous one. Only
the newest `keep_last` checkpoints are kept.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cascadelab.io import atomic_write_text

_NAME = re.compile(r"^step-(\d+)\.pt$")


def rng_state() -> dict[str, Any]:
    """Every RNG state a CPU/GPU training step may draw from."""
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": np.random.get_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _write_bytes_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


class CheckpointStore:
    """The checkpoints of one run in `folder`: save every N steps, keep the last `keep_last`, resume."""

    def __init__(self, folder: Path, keep_last: int = 2) -> None:
        if keep_last < 1:
            raise ValueError(f"keep_last must be >= 1, got {keep_last}")
        self.folder = Path(folder)
        self.keep_last = keep_last
        self.saved = 0

    def steps(self) -> list[int]:
        """Steps that have a checkpoint file (valid or not), oldest first."""
        if not self.folder.is_dir():
            return []
        found = (_NAME.match(p.name) for p in self.folder.iterdir())
        return sorted(int(m.group(1)) for m in found if m)

    def path(self, step: int) -> Path:
        """The payload file of the checkpoint at `step`."""
        return self.folder / f"step-{step:08d}.pt"

    def save(self, step: int, payload: dict[str, Any]) -> Path:
        """Write the checkpoint of `step` atomically with its hash, then drop all but the newest `keep_last`."""
        self.folder.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        data = buffer.getvalue()
        path = self.path(step)
        _write_bytes_atomic(path, data)
        record = {"step": step, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
        atomic_write_text(path.with_suffix(".json"), json.dumps(record, sort_keys=True) + "\n")
        self.saved += 1
        for old in self.steps()[: -self.keep_last]:
            self.path(old).unlink(missing_ok=True)
            self.path(old).with_suffix(".json").unlink(missing_ok=True)
        return path

    def load(self, step: int) -> dict[str, Any]:
        """The payload of the checkpoint at `step`; ValueError when it fails its hash check."""
        path = self.path(step)
        try:
            record = json.loads(path.with_suffix(".json").read_text())
        except (OSError, ValueError) as error:
            raise ValueError(f"{path.name}: no readable hash record ({error})") from None
        data = path.read_bytes()
        if len(data) != record["bytes"] or hashlib.sha256(data).hexdigest() != record["sha256"]:
            raise ValueError(f"{path.name}: content does not match its sha256 (truncated or corrupted)")
        payload: dict[str, Any] = torch.load(io.BytesIO(data), weights_only=False)
        return payload

    def latest(self) -> dict[str, Any] | None:
        """The newest checkpoint that passes its hash check (older ones tried in turn), or None."""
        for step in reversed(self.steps()):
            try:
                return self.load(step)
            except ValueError as error:
                warnings.warn(f"skipping checkpoint: {error}; trying the previous one", stacklevel=2)
        return None
