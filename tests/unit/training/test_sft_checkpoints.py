"""The TRL stages' checkpoint state: curriculum, sampler, curve and clock are required to resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cascadelab.data.curriculum import CurriculumSampler, CurriculumState
from cascadelab.training.checkpoint_folders import CheckpointError
from cascadelab.training.sft_checkpoints import (
    TrainingProgress,
    checkpoint_folders,
    clear_staging,
    finish_checkpoint,
    latest_checkpoint,
    restore,
    staging_folder,
)

TASKS = ["add"] * 4 + ["sub"] * 4


def sampler(seed: int = 0, switch_step: int | None = None) -> CurriculumSampler:
    return CurriculumSampler(TASKS, {"add": 1, "sub": 1}, ["add"], 40, seed, CurriculumState(switch_step), 4)


def save(output_dir: Path, step: int, source: CurriculumSampler, progress: TrainingProgress) -> Path:
    """A checkpoint as the trainer leaves it: its own files staged, then ours added and published."""
    folder = staging_folder(output_dir, step) / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"weights")
    return finish_checkpoint(output_dir, step, source, progress)


def test_a_checkpoint_restores_the_switch_the_curve_and_the_clock(tmp_path: Path) -> None:
    rows = [{"step": 5.0, "loss": 1.25}, {"step": 10.0, "loss": 0.5}]
    folder = save(tmp_path, 10, sampler(switch_step=7), TrainingProgress(rows, seconds_before=3.5))
    assert folder == tmp_path / "checkpoint-10" and latest_checkpoint(tmp_path) == folder
    fresh = sampler()
    progress = restore(folder, fresh)
    assert fresh.state.switch_step == 7
    assert progress.rows == rows and progress.seconds_before >= 3.5


def test_only_the_two_newest_are_kept_and_staging_leftovers_are_cleared(tmp_path: Path) -> None:
    for step in (10, 20, 30):
        save(tmp_path, step, sampler(), TrainingProgress())
    assert [p.name for p in checkpoint_folders(tmp_path)] == ["checkpoint-20", "checkpoint-30"]
    staging_folder(tmp_path, 40).mkdir()  # a kill in the middle of a save
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoint-30"
    clear_staging(tmp_path)
    assert not staging_folder(tmp_path, 40).exists()


def test_a_checkpoint_without_curriculum_state_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "checkpoint-10"
    folder.mkdir()
    (folder / "progress.json").write_text(json.dumps({"history": [], "train_seconds": 1.0}))
    with pytest.raises(CheckpointError) as caught:
        restore(folder, sampler())
    assert str(caught.value) == (
        f"checkpoint {folder}: no curriculum and sampler state (curriculum.json), so it cannot resume this run "
        f"exactly; delete {tmp_path} to train from step 0"
    )


def test_a_curriculum_state_without_the_switch_step_is_refused(tmp_path: Path) -> None:
    folder = save(tmp_path, 10, sampler(), TrainingProgress())
    (folder / "curriculum.json").write_text(json.dumps({"sampler": sampler().describe()}))
    with pytest.raises(CheckpointError, match=r"no switch_step in its curriculum state \(curriculum\.json\), so"):
        restore(folder, sampler())


def test_another_samplers_state_is_refused(tmp_path: Path) -> None:
    folder = save(tmp_path, 10, sampler(seed=1), TrainingProgress())
    with pytest.raises(CheckpointError, match=r": its sampler drew with seed 1, this run's with 0, so it cannot"):
        restore(folder, sampler(seed=0))


def test_a_checkpoint_without_its_curve_is_refused(tmp_path: Path) -> None:
    folder = save(tmp_path, 10, sampler(), TrainingProgress())
    (folder / "progress.json").unlink()
    with pytest.raises(CheckpointError, match=r": no training curve and clock \(progress\.json\), so it cannot"):
        restore(folder, sampler())
