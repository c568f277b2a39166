"""SIGKILL of a stage launched on several processes ends its torchrun launcher and workers too."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
# A stage's shape without its work: relaunch under torchrun, then each worker records itself and waits.
STAGE = """
import os, sys, time
from pathlib import Path
from cascadelab.ranks import relaunch_under_torchrun

relaunch_under_torchrun(2, __file__)
Path(sys.argv[1], os.environ["RANK"]).write_text(f"{os.getpid()} {os.getppid()}")
time.sleep(600)
"""


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"  # a zombie has ended; only its parent's wait is missing


def wait_for(condition, limit: float) -> bool:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return condition()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_killing_the_stage_ends_its_launcher_and_workers(tmp_path):
    script = tmp_path / "stage.py"
    script.write_text(STAGE)
    ready = tmp_path / "ready"
    ready.mkdir()
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    stage = subprocess.Popen([sys.executable, str(script), str(ready)], env=env, cwd=tmp_path)
    pids: list[int] = []
    try:
        assert wait_for(lambda: len(list(ready.iterdir())) == 2, 300), "the workers did not start"
        records = [[int(n) for n in (ready / rank).read_text().split()] for rank in ("0", "1")]
        pids = [pid for pid, _ in records] + [records[0][1]]  # the workers and their launcher
        assert all(alive(pid) for pid in pids)
        stage.send_signal(signal.SIGKILL)
        stage.wait()
        assert wait_for(lambda: not any(alive(pid) for pid in pids), 60), [p for p in pids if alive(p)]
    finally:
        stage.kill()
        for pid in pids:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
