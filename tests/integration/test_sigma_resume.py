"""Checkpoints: a run killed with SIGKILL and run again ends with the same metrics as an uninterrupted run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from cascadelab.training.run_checkpoints import CheckpointStore

HERE = Path(__file__).parent
SRC = HERE.parents[1] / "src"
TIMING = ("phase_", "perf_bottleneck_", "elapsed_s", "core_tokens_per_s", "effective_tokens_per_s")


def _run(out: Path, ckpt: Path, *extra: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), str(HERE)])}
    return subprocess.Popen(
        [sys.executable, str(HERE / "resume_run.py"), str(out), str(ckpt), *extra],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _metrics(out: Path) -> list[dict[str, float]]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if not k.startswith(TIMING)} for row in rows]


def test_a_killed_run_resumes_to_identical_final_metrics(tmp_path: Path) -> None:
    whole = _run(tmp_path / "whole", tmp_path / "whole_ckpt")
    assert whole.wait(timeout=300) == 0, whole.stderr.read() if whole.stderr else ""

    victim = _run(tmp_path / "killed", tmp_path / "ckpt", "--slow")
    deadline = time.monotonic() + 240
    while not (tmp_path / "ckpt" / "step-00000008").is_dir():  # killed after its 2nd checkpoint
        assert victim.poll() is None and time.monotonic() < deadline, "the slow run ended before the kill"
        time.sleep(0.05)
    victim.kill()  # SIGKILL: no handler, no cleanup
    assert victim.wait(timeout=30) == -9
    assert not (tmp_path / "ckpt" / f"step-{24:08d}").exists()

    again = _run(tmp_path / "killed", tmp_path / "ckpt")
    stdout, stderr = again.communicate(timeout=300)
    assert again.returncode == 0, stderr
    resumed_from = int(stdout.split()[-1])
    assert 8 <= resumed_from < 24
    assert _metrics(tmp_path / "killed") == _metrics(tmp_path / "whole")
    final = _metrics(tmp_path / "whole")[-1]
    assert final["step"] == 24 and final["feature_c3o_credit_effective_calls"] == 6
    assert final["feature_prefetch_effective_calls"] == 24


def test_a_corrupted_checkpoint_is_skipped_for_the_previous_one(tmp_path: Path, capsys) -> None:
    store = CheckpointStore(tmp_path, keep_last=3)
    for step in (4, 8, 12, 16):
        store.save(step, {"step": step, "weights": torch.full((3,), float(step))})
    assert store.steps() == [8, 12, 16]  # the oldest rotated out
    newest = store.path(16) / "state.pt"
    size = newest.stat().st_size
    newest.write_bytes(newest.read_bytes()[:-10])  # truncated
    payload = store.latest()
    assert payload is not None and payload["step"] == 12
    assert capsys.readouterr().out == (
        f"checkpoint {store.path(16)} is incomplete (state.pt has {size - 10} bytes, the manifest says {size}); "
        "falling back to checkpoint step-00000012\n"
    )
    (store.path(12) / "manifest.json").unlink()  # a folder renamed without its manifest
    payload = store.latest()
    assert payload is not None and payload["step"] == 8
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[1] == (
        f"checkpoint {store.path(12)} is incomplete (no manifest.json); falling back to checkpoint step-00000008"
    )
