"""End to end: a stage killed with SIGKILL three times, then run to completion, gives the uninterrupted run's results.

For `coarse_sft` (TRL checkpoints) and `sigma_pretrain` (the LM trainer's checkpoints): an uninterrupted
`dvc repro`, then the same stage killed (its whole process group, `kill -9`) right after its 1st, 2nd
and 3rd checkpoint appear, each kill followed by a rerun that resumes, the newest checkpoint truncated
before the last rerun (which falls back to the previous one). The models, curves and metrics must match
the uninterrupted run's, except machine timings.
"""

import copy
import json
import os
import re
import signal
import stat
import subprocess
import sys
import time

import pytest
import yaml
from e2e_project import TINY_COARSE, TINY_PREPARE, TINY_SIGMA, deep_update, dvc, make_project, stage_figures

pytestmark = pytest.mark.slow

SAVE_EVERY = 10
KILLS = (1, 2, 3)  # killed after the 1st, 2nd and 3rd checkpoint
COARSE = deep_update(
    copy.deepcopy(TINY_COARSE), {"train": {"max_steps": 150, "save_steps": SAVE_EVERY, "logging_steps": 5}}
)
SIGMA = deep_update(
    copy.deepcopy(TINY_SIGMA),
    {"train": {"max_steps": 80, "checkpoint_steps": SAVE_EVERY, "logging_steps": 5, "eval_steps": 40}},
)
# Machine timings differ between any two runs: they live in plots/<stage>/timing.json, not in metrics/*.json,
# but the curves and SIGMA's metrics.jsonl still carry per-window rates and phase seconds, which this drops.
TIMING = re.compile(r"(_s|_seconds|_time_ratio)$|perf_bottleneck_")


def untimed(row):
    """`row` without the keys that are machine timings."""
    return {key: value for key, value in row.items() if not TIMING.search(key)}


def tsv_untimed(path):
    """A TSV's rows as dicts, timing columns dropped."""
    header, *lines = path.read_text().splitlines()
    return [untimed(dict(zip(header.split("\t"), line.split("\t"), strict=True))) for line in lines]


def folder_bytes(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def lock_outs(repo, stage):
    """{path: md5} of `stage`'s outputs in dvc.lock."""
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    return {out["path"]: out["md5"] for out in lock["stages"][stage]["outs"]}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    project = make_project(
        tmp_path_factory.mktemp("resume"), {"prepare": TINY_PREPARE, "coarse_sft": COARSE, "sigma_pretrain": SIGMA}
    )
    dvc(project, "repro", "prepare")
    return project


def snapshot(repo, stage, model, curves):
    """What the stage wrote and DVC hashed: model bytes, curves, untimed metrics, dvc.lock's outputs."""
    return {
        "model": folder_bytes(repo / model),
        "curves": {name: tsv_untimed(repo / "plots" / stage / name) for name in curves},
        "predictions": (repo / "plots" / stage / "predictions.jsonl").read_text(),
        "metrics": stage_figures(repo, stage),  # headline + details, no timings: compared whole
        "lock": lock_outs(repo, stage),
    }


def checkpoints(repo, store):
    """{step: folder} of the checkpoint folders in `.cache/checkpoints/<store>` (a glob)."""
    found = (repo / ".cache" / "checkpoints").glob(f"{store}/*")
    return {int(p.name.split("-")[-1]): p for p in found if re.fullmatch(r"(checkpoint|step)-\d+", p.name)}


def kill_after_next_checkpoint(project, stage, store):
    """Run `stage`; once it has written a checkpoint newer than those there, SIGKILL its whole process group."""
    repo, env = project
    before = max(checkpoints(repo, store), default=0)
    process = subprocess.Popen(
        [sys.executable, "-m", "dvc", "repro", "--force", "--single-item", stage],
        cwd=repo,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # dvc, the stage and its spawned helpers: all killed together
    )
    deadline = time.monotonic() + 600
    while max(checkpoints(repo, store), default=0) <= before:
        assert process.poll() is None, f"{stage} ended (rc {process.returncode}) before a new checkpoint"
        assert time.monotonic() < deadline, f"{stage}: no new checkpoint within 600 s"
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    assert process.wait(timeout=60) == -signal.SIGKILL


def kill_three_times_and_finish(project, stage, store, newest_file):
    """Kill `stage` after each of three new checkpoints; truncate the newest one's `newest_file`; run it to the end."""
    repo, _ = project
    for _ in KILLS:
        kill_after_next_checkpoint(project, stage, store)
    found = checkpoints(repo, store)
    # The newest and the one to fall back to; a kill between a save and the rotation that follows it leaves
    # the oldest one too (the next save removes it).
    assert 2 <= len(found) <= 3, found
    steps = sorted(found)
    newest, previous = found[steps[-1]], found[steps[-2]]
    damaged = newest / newest_file
    damaged.write_bytes(damaged.read_bytes()[:100])
    out = dvc(project, "repro", "--force", "--single-item", stage)
    assert (
        f"checkpoint {newest.relative_to(repo)} is incomplete ({newest_file} has 100 bytes, the manifest says " in out
    ), out
    assert f"); falling back to checkpoint {previous.name}\n" in out, out
    assert not checkpoints(repo, store), "a finished run leaves no checkpoints"


def hashed_alike(lock):
    """dvc.lock's outputs without the timing file (wall times differ between any two runs)."""
    return {path: md5 for path, md5 in lock.items() if not path.endswith("/timing.json")}


def test_coarse_sft_killed_three_times_ends_as_the_uninterrupted_run(project):
    repo, _ = project
    dvc(project, "repro", "--force", "--single-item", "coarse_sft")
    whole = snapshot(repo, "coarse_sft", "models/coarse", ["train.tsv"])
    assert len(whole["curves"]["train.tsv"]) == COARSE["train"]["max_steps"] // 5

    kill_three_times_and_finish(project, "coarse_sft", "coarse_sft-*", "model.safetensors")
    resumed = snapshot(repo, "coarse_sft", "models/coarse", ["train.tsv"])
    assert resumed["model"] == whole["model"]
    assert resumed["curves"] == whole["curves"]  # the killed runs' rows are kept
    assert resumed["predictions"] == whole["predictions"]
    assert resumed["metrics"] == whole["metrics"]
    assert hashed_alike(resumed["lock"]) == hashed_alike(whole["lock"])  # the model, curve and predictions

    mask = os.umask(0)
    os.umask(mask)
    for path in [repo / "models/coarse", *(repo / "models/coarse").iterdir(), repo / "metrics/coarse_sft.json"]:
        expected = (0o777 if path.is_dir() else 0o666) & ~mask
        assert stat.S_IMODE(path.stat().st_mode) == expected, path


def test_sigma_pretrain_killed_three_times_ends_as_the_uninterrupted_run(project):
    repo, _ = project
    dvc(project, "repro", "--force", "--single-item", "sigma_pretrain")
    curves = ["sigma.tsv", "baseline.tsv"]
    whole = snapshot(repo, "sigma_pretrain", "models/sigma", curves)
    log = repo / "runs/sigma_pretrain/metrics.jsonl"
    whole_log = [untimed(json.loads(line)) for line in log.read_text().splitlines()]

    kill_three_times_and_finish(project, "sigma_pretrain", "sigma_pretrain-sigma-*", "state.pt")
    resumed = snapshot(repo, "sigma_pretrain", "models/sigma", curves)
    assert resumed["model"] == whole["model"]
    assert resumed["curves"] == whole["curves"]  # timing columns (core_tokens_per_s) dropped
    assert resumed["predictions"] == whole["predictions"]
    assert resumed["metrics"] == whole["metrics"]
    assert resumed["lock"]["models/sigma"] == whole["lock"]["models/sigma"]
    assert [untimed(json.loads(line)) for line in log.read_text().splitlines()] == whole_log
