"""Which process of a multi-process launch this is, and the relaunch of a stage under torchrun.

torchrun and `accelerate launch` start one process per rank with `RANK` and `WORLD_SIZE` set; a plain
`python stages/<stage>.py` has neither and is the only process. A stage whose params ask for
`launch.nproc > 1` re-executes itself under `torch.distributed.run`, so `dvc repro` (whose stage commands
never change) runs it on several processes; every rank trains, rank 0 alone writes, evaluates and logs.
"""

from __future__ import annotations

import os
import subprocess
import sys


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
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", script, *argv]


def relaunch_under_torchrun(nproc: int, script: str) -> None:
    """Run `script` again on `nproc` processes and exit with their status, unless already one of them."""
    if nproc <= 1 or "WORLD_SIZE" in os.environ:
        return
    print(f"launching {os.path.basename(script)} on {nproc} processes (launch.nproc)", flush=True)
    sys.exit(subprocess.call(torchrun_command(script, nproc, sys.argv[1:])))


def split_batch(global_batch: int, what: str) -> int:
    """Rows per process of a `global_batch` split evenly over the launch's processes."""
    processes = world_size()
    if global_batch % processes:
        raise ValueError(f"{what}: {global_batch} rows do not split evenly over {processes} processes (launch.nproc)")
    return global_batch // processes
