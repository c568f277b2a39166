"""Atomic writes leave artifacts with ordinary permissions (what the umask allows), not tempfile's private ones."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from cascadelab.io import atomic_directory, atomic_file, atomic_write_text, current_umask, write_json


@pytest.fixture(params=[0o022, 0o027])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    previous = os.umask(request.param)
    yield request.param
    os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_current_umask_reads_the_process_mask(umask: int) -> None:
    assert current_umask() == umask


def test_files_and_folders_get_ordinary_modes(tmp_path: Path, umask: int) -> None:
    atomic_write_text(tmp_path / "a.txt", "x")
    write_json(tmp_path / "m.json", {"a": 1})
    with atomic_file(tmp_path / "w.bin") as tmp:
        tmp.write_bytes(b"\0")
    with atomic_directory(tmp_path / "model") as tmp:
        (tmp / "config.json").write_text("{}")
        (tmp / "model.safetensors").write_bytes(b"w")
        os.chmod(tmp / "model.safetensors", 0o600)  # renamed from a library's own private temporary file
    for name in ("a.txt", "m.json", "w.bin"):
        assert mode(tmp_path / name) == 0o666 & ~umask, name
    assert mode(tmp_path / "model") == 0o777 & ~umask
    for name in ("config.json", "model.safetensors"):
        assert mode(tmp_path / "model" / name) == 0o666 & ~umask, name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "m.json", "model", "w.bin"]  # no leftovers


def test_a_failed_write_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), atomic_file(tmp_path / "w.bin") as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []
