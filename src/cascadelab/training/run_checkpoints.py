"""The LM trainer's resumable checkpoints: one folder per step, complete or ignored, the newest few kept.

Each checkpoint is ``step-<n>/state.pt`` (``torch.save`` of the payload) with its manifest
(:mod:`cascadelab.training.checkpoint_folders`): staged, listed, renamed. :meth:`CheckpointStore.latest`
skips a checkpoint that fails its manifest with one printed line and falls back to the previous one.
"""

from __future__ import annotations

import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cascadelab.training.checkpoint_folders import newest_whole, problem, prune, publish

_NAME = re.compile(r"^step-(\d+)$")
STATE_FILE = "state.pt"


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


class CheckpointStore:
    """The checkpoints of one run in `folder`: save every N steps, keep the last `keep_last`, resume."""

    def __init__(self, folder: Path, keep_last: int = 2) -> None:
        if keep_last < 1:
            raise ValueError(f"keep_last must be >= 1, got {keep_last}")
        self.folder = Path(folder)
        self.keep_last = keep_last
        self.saved = 0
        self.loaded_from: Path | None = None  # the checkpoint `latest` returned

    def steps(self) -> list[int]:
        """Steps that have a checkpoint folder (whole or not), oldest first."""
        if not self.folder.is_dir():
            return []
        found = (_NAME.match(p.name) for p in self.folder.iterdir() if p.is_dir())
        return sorted(int(m.group(1)) for m in found if m)

    def path(self, step: int) -> Path:
        """The folder of the checkpoint at `step`."""
        return self.folder / f"step-{step:08d}"

    def save(self, step: int, payload: dict[str, Any]) -> Path:
        """Write the checkpoint of `step` whole (staged, manifest last, renamed); keep only the newest `keep_last`."""
        final = self.path(step)
        staging = final.with_name(f".{final.name}.tmp")
        shutil.rmtree(staging, ignore_errors=True)  # a kill in the middle of an earlier save
        staging.mkdir(parents=True)
        torch.save(payload, staging / STATE_FILE)
        publish(staging, final)
        self.saved += 1
        steps = self.steps()
        prune([self.path(s) for s in steps], steps, self.keep_last, step)
        return final

    def load(self, step: int) -> dict[str, Any]:
        """The payload of the checkpoint at `step`; ValueError when it fails its manifest."""
        folder = self.path(step)
        reason = problem(folder)
        if reason is not None:
            raise ValueError(f"checkpoint {folder} is incomplete ({reason})")
        payload: dict[str, Any] = torch.load(folder / STATE_FILE, weights_only=False)
        return payload

    def latest(self) -> dict[str, Any] | None:
        """The newest checkpoint that passes its manifest (older ones tried in turn, one line each), or None."""
        self.loaded_from = newest_whole([self.path(step) for step in self.steps()])
        if self.loaded_from is None:
            return None
        payload: dict[str, Any] = torch.load(self.loaded_from / STATE_FILE, weights_only=False)
        return payload
