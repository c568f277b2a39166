"""Matplotlib without a display: the pyplot module on the Agg backend, and figures written atomically."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cascadelab.io import atomic_file


def pyplot() -> Any:
    """`matplotlib.pyplot` on the Agg backend (no display needed); imported on first use, not with the package."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(figure: Any, path: str | Path, dpi: int = 120) -> Path:
    """Lay out a matplotlib figure, write it as a PNG atomically and close it; returns `path`."""
    figure.tight_layout()
    with atomic_file(path) as tmp:
        figure.savefig(tmp, dpi=dpi, format="png")
    pyplot().close(figure)
    return Path(path)
