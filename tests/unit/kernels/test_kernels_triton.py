"""Triton kernels against their PyTorch references: on CPU through the interpreter, on CUDA natively."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("triton")

HERE = Path(__file__).parent
SRC = HERE.parents[2] / "src"
TOL = 1e-4  # float32 everywhere; the scan's kernel and reference differ only in summation order


@pytest.fixture(scope="module")
def interpreted_errors() -> dict[str, float]:
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": os.pathsep.join([str(SRC), str(HERE)])}
    run = subprocess.run(
        [sys.executable, str(HERE / "kernel_cases.py"), "cpu"],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


SCAN_CASES = ["scan_y", "scan_state"] + [
    f"scan_grad_{n}" for n in ("q", "k", "v", "log_decay", "dt", "trap", "angle_rate")
]


@pytest.mark.parametrize("case", SCAN_CASES)
def test_interpreted_complex_scan_matches_reference(interpreted_errors: dict[str, float], case: str) -> None:
    assert interpreted_errors[case] < TOL


def test_interpreted_bitlinear_matmul_is_exact(interpreted_errors: dict[str, float]) -> None:
    bitlinear = {k: v for k, v in interpreted_errors.items() if k.startswith("bitlinear_")}
    assert len(bitlinear) == 2
    assert all(err < 1e-6 for err in bitlinear.values()), bitlinear


def test_interpreted_gnprox_update_matches_reference(interpreted_errors: dict[str, float]) -> None:
    gnprox = {k: v for k, v in interpreted_errors.items() if k.startswith("gnprox_")}
    assert len(gnprox) == 6  # p, m, h for two sizes
    assert all(err < 1e-6 for err in gnprox.values()), gnprox


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_kernels_match_reference() -> None:
    sys.path.insert(0, str(HERE))
    from kernel_cases import bitlinear_errors, gnprox_errors, scan_errors

    errors = {**scan_errors("cuda"), **bitlinear_errors("cuda"), **gnprox_errors("cuda")}
    assert all(err < TOL for err in errors.values()), errors
