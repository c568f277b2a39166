"""Crash reports: an unhandled exception in a training run becomes `<out>/errors/<UTC time>.json`."""

from __future__ import annotations

import datetime
import platform
import sys
import traceback
from pathlib import Path
from typing import Any

import torch

from cascadelab.io import write_json


def versions() -> dict[str, str]:
    """Versions of Python and the libraries a run depends on."""
    found = {"python": platform.python_version(), "torch": torch.__version__}
    for name in ("transformers", "triton", "mlflow"):
        module = sys.modules.get(name)
        if module is not None:
            found[name] = str(getattr(module, "__version__", "?"))
    return found


def write_crash_report(
    out_dir: Path,
    error: BaseException,
    step: int,
    settings: dict[str, Any] | None = None,
    last_metrics: dict[str, float] | None = None,
    device: str = "cpu",
) -> Path:
    """Write the report (traceback, step, resolved settings, versions, device, last metrics); returns its path."""
    now = datetime.datetime.now(datetime.UTC)
    path = Path(out_dir) / "errors" / f"{now.strftime('%Y%m%dT%H%M%S.%fZ')}.json"
    write_json(
        path,
        {
            "utc": now.isoformat(),
            "error": f"{type(error).__name__}: {error}",
            "traceback": "".join(traceback.format_exception(error)),
            "step": step,
            "settings": settings or {},
            "versions": versions(),
            "device": device,
            "last_metrics": last_metrics or {},
        },
    )
    return path
