"""The TRL stages' checkpoints (Hugging Face `checkpoint-<step>` folders): whole or ignored, with what a resume needs.

Each checkpoint holds, besides the trainer's own files, ``curriculum.json`` (the curriculum's switch step and
the sampler's settings: which rows later batches draw) and ``progress.json`` (the training curve so far and
the training seconds): a resumed run draws the same batches, keeps the killed run's curve rows and sums
the seconds. A checkpoint is staged in ``.checkpoint-<step>.tmp/``, listed in a manifest and renamed
(:mod:`cascadelab.training.checkpoint_folders`); :func:`latest_checkpoint` takes the place of Hugging Face's
`get_last_checkpoint`, which would pick a folder without checking it.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState
from transformers import TrainingArguments as HFTrainingArguments

from cascadelab.data.curriculum import CurriculumSampler
from cascadelab.io import atomic_write_text
from cascadelab.training.checkpoint_folders import newest_whole, prune, publish, refuse

CURRICULUM_FILE = "curriculum.json"
PROGRESS_FILE = "progress.json"
KEEP = 2  # checkpoints kept: the newest, and the one to fall back to
_NAME = re.compile(r"^checkpoint-(\d+)$")


def step_of(folder: Path) -> int:
    """The step of checkpoint folder `folder` (``checkpoint-<step>``)."""
    found = _NAME.match(folder.name)
    if found is None:
        raise ValueError(f"{folder}: not a checkpoint-<step> folder")
    return int(found.group(1))


def checkpoint_folders(output_dir: Path) -> list[Path]:
    """The `checkpoint-<step>` folders in `output_dir` (whole or not), oldest first."""
    if not output_dir.is_dir():
        return []
    return sorted((p for p in output_dir.iterdir() if p.is_dir() and _NAME.match(p.name)), key=step_of)


def latest_checkpoint(output_dir: Path) -> Path | None:
    """The newest checkpoint in `output_dir` that passes its manifest (a skipped one prints one line), or None."""
    return newest_whole(checkpoint_folders(output_dir))


def staging_folder(output_dir: Path, step: int) -> Path:
    """Where the checkpoint of `step` is written before it is published (the same path on every rank)."""
    return output_dir / f".checkpoint-{step}.tmp"


def clear_staging(output_dir: Path) -> None:
    """Remove checkpoints a killed run left half-written."""
    for folder in output_dir.glob(".checkpoint-*.tmp") if output_dir.is_dir() else []:
        shutil.rmtree(folder, ignore_errors=True)


def finish_checkpoint(
    output_dir: Path, step: int, sampler: CurriculumSampler, progress: TrainingProgress, keep: int = KEEP
) -> Path:
    """Add the curriculum and progress to the staged checkpoint of `step`, publish it whole, keep the newest `keep`."""
    staging = staging_folder(output_dir, step)
    folder = staging / f"checkpoint-{step}"
    atomic_write_text(folder / CURRICULUM_FILE, json.dumps(sampler.state_dict(), sort_keys=True) + "\n")
    atomic_write_text(folder / PROGRESS_FILE, json.dumps(progress.state_dict(), sort_keys=True) + "\n")
    final = output_dir / folder.name
    publish(folder, final)
    shutil.rmtree(staging, ignore_errors=True)
    folders = checkpoint_folders(output_dir)
    prune(folders, [step_of(f) for f in folders], keep, step)
    return final


def _required(folder: Path, name: str, what: str) -> dict[str, Any]:
    try:
        state: dict[str, Any] = json.loads((folder / name).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise refuse(folder, f"no {what} ({name})") from None
    return state


def restore(folder: Path, sampler: CurriculumSampler) -> TrainingProgress:
    """Load checkpoint `folder`'s curriculum into `sampler`, return its progress; refused in one line without them."""
    curriculum = _required(folder, CURRICULUM_FILE, "curriculum and sampler state")
    try:
        sampler.load_state_dict(curriculum)
    except KeyError as error:
        raise refuse(folder, f"no {error.args[0]} in its curriculum state ({CURRICULUM_FILE})") from None
    except ValueError as error:
        raise refuse(folder, str(error)) from None
    progress = _required(folder, PROGRESS_FILE, "training curve and clock")
    try:
        return TrainingProgress(progress["history"], float(progress["train_seconds"]))
    except KeyError as error:
        raise refuse(folder, f"no {error.args[0]} in its progress ({PROGRESS_FILE})") from None


class TrainingProgress(TrainerCallback):
    """The training curve (every logged loss row) and the training clock, both continued across a resume."""

    def __init__(self, history: list[dict[str, float]] | None = None, seconds_before: float = 0.0) -> None:
        self.rows: list[dict[str, float]] = list(history or [])
        self.seconds_before = seconds_before
        self.started: float | None = None

    def seconds(self) -> float:
        """Training seconds so far: those before the resume plus this process's."""
        return self.seconds_before + (time.perf_counter() - self.started if self.started is not None else 0.0)

    def state_dict(self) -> dict[str, Any]:
        """The curve and the clock as a checkpoint keeps them."""
        return {"history": self.rows, "train_seconds": self.seconds()}

    def on_train_begin(
        self, args: HFTrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: object
    ) -> None:
        """Start this process's clock."""
        self.started = time.perf_counter()

    def on_log(
        self,
        args: HFTrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict | None = None,
        **kwargs: object,
    ) -> None:
        """Record the training-loss logs."""
        if logs and "loss" in logs:
            row = {"step": float(state.global_step)}
            row.update({k: float(v) for k, v in logs.items() if k in ("loss", "learning_rate", "grad_norm")})
            self.rows.append(row)
