"""Importing cascadelab pins torch's and oneDNN's CPU kernel paths: the same params give the same bytes across CPUs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SRC = str(Path(__file__).resolve().parents[2] / "src")


def after_import(code: str, name: str, value: str | None) -> str:
    """What `code` prints in a fresh interpreter that imports cascadelab first, with env `name` set or unset."""
    env = {k: v for k, v in os.environ.items() if k != name} | {"PYTHONPATH": SRC}
    if value is not None:
        env[name] = value
    run = subprocess.run([sys.executable, "-c", f"import cascadelab; {code}"], env=env, capture_output=True, text=True)
    run.check_returncode()
    return run.stdout.strip()


def cpu_capability(env_value: str | None) -> str:
    """torch's CPU capability after importing cascadelab."""
    code = "import torch; print(torch.backends.cpu.get_cpu_capability())"
    return after_import(code, "ATEN_CPU_CAPABILITY", env_value)


def has_avx2() -> bool:
    """Whether this machine can run the AVX2 kernels at all (an x86-64 CPU from the last decade)."""
    try:
        return "avx2" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


@pytest.mark.skipif(not has_avx2(), reason="no AVX2 on this CPU: torch falls back to its portable kernels")
def test_import_pins_the_avx2_kernel_path() -> None:
    assert cpu_capability(None) == "AVX2"


def test_an_exported_capability_wins() -> None:
    assert cpu_capability("default") == "DEFAULT"


def test_import_caps_onednn_at_avx2_unless_exported() -> None:
    code = "import os; print(os.environ['ONEDNN_MAX_CPU_ISA'])"
    assert after_import(code, "ONEDNN_MAX_CPU_ISA", None) == "AVX2"
    assert after_import(code, "ONEDNN_MAX_CPU_ISA", "AVX512_CORE") == "AVX512_CORE"
