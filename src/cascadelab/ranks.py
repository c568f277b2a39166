"""Which process of a multi-process launch this is, and the relaunch of a stage under torchrun.

torchrun and `accelerate launch` start one process per rank with `RANK` and `WORLD_SIZE` set; a plain
`python stages/<stage>.py` has neither and is the only process. A stage whose params ask for
`launch.nproc > 1` re-executes itself under `torch.distributed.run` (`pipeline.runtime.stage_context` does
it for every stage), so `dvc repro` (whose stage commands never change) runs it on several processes; every
rank trains, rank 0 alone writes, evaluates and logs.

The launch is tied to the stage's process: torchrun starts its workers in sessions of their own, so a
stage killed with SIGKILL (which it cannot trap) would leave them running. The launcher and every worker
ask Linux (`prctl(PR_SET_PDEATHSIG)`) to be signalled when their parent dies: the launcher gets SIGTERM
(torchrun then stops its workers), each worker SIGKILL. Elsewhere than Linux this does nothing.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

# The pid a launched process's parent had when it started it; lets the child notice a parent that died first.
PARENT_ENV = "CASCADELAB_LAUNCH_PARENT"
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def world_size() -> int:
    """Processes in this launch (1 outside torchrun/accelerate)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    """This process's global rank (0 outside torchrun/accelerate)."""
    return int(os.environ.get("RANK", "0"))


def is_main_process() -> bool:
    """Whether this process writes outputs, evaluates and logs (rank 0)."""
    return rank() == 0


def torchrun_command(script: str, nproc: int, argv: list[str]) -> list[str]:
    """The command that runs `script` on `nproc` local processes (torchrun's standalone rendezvous)."""
    launcher = [sys.executable, "-m", "cascadelab.ranks"]  # torch.distributed.run, tied to this process
    return [*launcher, "--standalone", f"--nproc_per_node={nproc}", script, *argv]


def relaunch_under_torchrun(nproc: int, script: str) -> None:
    """Run `script` again on `nproc` processes and exit with their status, unless already one of them.

    Inside a launch (torchrun's or accelerate's workers) this only ties the worker to its launcher.
    """
    if "WORLD_SIZE" in os.environ:
        die_with_parent(signal.SIGKILL, _expected_parent())
        return
    if nproc <= 1:
        return
    print(f"launching {os.path.basename(script)} on {nproc} processes (launch.nproc)", flush=True)
    env = {**os.environ, PARENT_ENV: str(os.getpid())}
    sys.exit(subprocess.call(torchrun_command(script, nproc, sys.argv[1:]), env=env))


def die_with_parent(signal_number: int, parent: int | None = None) -> bool:
    """Have Linux send this process `signal_number` when its parent dies; False where it cannot (not Linux).

    With `parent` (the pid the parent had when it started us), a parent that already died is caught too.
    """
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, int(signal_number), 0, 0, 0) != 0:
        return False
    if parent is not None and os.getppid() != parent:  # orphaned before the request took effect
        os.kill(os.getpid(), signal_number)
    return True


def _expected_parent() -> int | None:
    value = os.environ.get(PARENT_ENV, "")
    return int(value) if value.isdigit() else None


def split_batch(global_batch: int, what: str) -> int:
    """Rows per process of a `global_batch` split evenly over the launch's processes."""
    processes = world_size()
    if global_batch % processes:
        raise ValueError(f"{what}: {global_batch} rows do not split evenly over {processes} processes (launch.nproc)")
    return global_batch // processes


def _launcher_main(argv: list[str]) -> None:
    """torchrun (`torch.distributed.run`) that ends when the stage that started it ends."""
    die_with_parent(signal.SIGTERM, _expected_parent())  # torchrun stops its workers on SIGTERM
    os.environ[PARENT_ENV] = str(os.getpid())  # the workers' parent
    from torch.distributed.run import main

    main(argv)


if __name__ == "__main__":
    _launcher_main(sys.argv[1:])
