"""Checkpoint folders are complete or ignored: manifest written last, checked at load, fallback in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cascadelab.training.checkpoint_folders import newest_whole, problem, prune, publish, refuse


def _checkpoint(root: Path, name: str, files: dict[str, bytes]) -> Path:
    staging = root / f".{name}.tmp"
    for rel, data in files.items():
        (staging / rel).parent.mkdir(parents=True, exist_ok=True)
        (staging / rel).write_bytes(data)
    publish(staging, root / name)
    return root / name


def test_publish_renames_the_staging_folder_and_lists_every_file(tmp_path: Path) -> None:
    folder = _checkpoint(tmp_path, "step-1", {"state.pt": b"abc", "sub/rng.pth": b"xy"})
    assert not (tmp_path / ".step-1.tmp").exists()
    listed = json.loads((folder / "manifest.json").read_text())["files"]
    assert {name: entry["bytes"] for name, entry in listed.items()} == {"state.pt": 3, "sub/rng.pth": 2}
    assert problem(folder) is None


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (lambda f: (f / "state.pt").write_bytes(b"ab"), "state.pt has 2 bytes, the manifest says 3"),
        (lambda f: (f / "state.pt").write_bytes(b"abd"), "state.pt does not match its sha256"),
        (lambda f: (f / "state.pt").unlink(), "state.pt is missing"),
        (lambda f: (f / "manifest.json").unlink(), "no manifest.json"),
        (lambda f: (f / "manifest.json").write_text("{"), "manifest.json is unreadable"),
    ],
)
def test_every_kind_of_damage_is_named(tmp_path: Path, damage, expected: str) -> None:
    folder = _checkpoint(tmp_path, "step-1", {"state.pt": b"abc"})
    damage(folder)
    assert problem(folder) == expected


def test_a_truncated_newest_checkpoint_falls_back_to_the_previous_with_one_line(tmp_path: Path, capsys) -> None:
    older = _checkpoint(tmp_path, "step-4", {"state.pt": b"four"})
    newer = _checkpoint(tmp_path, "step-8", {"state.pt": b"eight"})
    (newer / "state.pt").write_bytes(b"eig")  # truncated
    assert newest_whole([older, newer]) == older
    assert capsys.readouterr().out == (
        f"checkpoint {newer} is incomplete (state.pt has 3 bytes, the manifest says 5); "
        "falling back to checkpoint step-4\n"
    )


def test_no_whole_checkpoint_means_a_fresh_start(tmp_path: Path, capsys) -> None:
    only = tmp_path / "step-4"
    only.mkdir()  # a folder without a manifest: an older format, or written by hand
    assert newest_whole([only]) is None
    assert capsys.readouterr().out == f"checkpoint {only} is incomplete (no manifest.json); falling back to step 0\n"


def test_prune_keeps_the_newest_and_drops_a_timeline_left_behind(tmp_path: Path) -> None:
    folders = [_checkpoint(tmp_path, f"step-{s}", {"state.pt": b"x"}) for s in (2, 4, 6, 8)]
    prune(folders, [2, 4, 6, 8], keep=2, current=4)  # resumed from 4 after 6 and 8 failed their checks
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-2", "step-4"]


def test_refusal_names_the_checkpoint_and_how_to_start_over(tmp_path: Path) -> None:
    error = refuse(tmp_path / "checkpoint-6", "no curriculum and sampler state (curriculum.json)")
    assert str(error) == (
        f"checkpoint {tmp_path / 'checkpoint-6'}: no curriculum and sampler state (curriculum.json), "
        f"so it cannot resume this run exactly; delete {tmp_path} to train from step 0"
    )
