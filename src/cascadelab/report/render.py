"""The report's renderings: a Markdown table and a bar chart of test EM per model (the TSV is `io.write_tsv`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from cascadelab.config import TASK_FAMILIES
from cascadelab.plotting import pyplot, save_figure
from cascadelab.report.table import ModelRow

COLUMNS = ["model", "stage", "tasks", "em", *(f"em_{f}" for f in TASK_FAMILIES), "ppl", "params", "train_seconds",
           "inference_compute"]  # fmt: skip


def _cell(value: object, digits: int = 1) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.{digits}f}"
    return str(value)


def markdown_table(rows: Sequence[ModelRow]) -> str:
    """The comparison table in GitHub Markdown (EM in %, seconds, compute relative to one pass per token)."""
    header = ["model", "stage", "test items", "test EM %", *TASK_FAMILIES, "ppl", "params", "train s",
              "inference compute"]  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        family = [_cell(row.em_by_family.get(f)) for f in TASK_FAMILIES]
        cells = [row.model, f"`{row.stage}`", row.tasks, _cell(row.em), *family, _cell(row.ppl, 3), _cell(row.params),
                 _cell(row.train_seconds, 0), _cell(row.inference_compute, 2)]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_accuracy(path: Path, rows: Sequence[ModelRow]) -> Path:
    """Horizontal bars of test EM per model on the whole test split, labelled with parameters and compute."""
    plt = pyplot()

    points = sorted((r for r in rows if r.em is not None and r.tasks == "all"), key=lambda r: r.em or 0.0)
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(points) + 1.2))
    ems = [r.em or 0.0 for r in points]
    ax.barh([r.model for r in points], ems, color="tab:blue")
    for y, row in enumerate(points):
        params = "?" if row.params is None else f"{row.params / 1e6:.2f} M"
        compute = "?" if row.inference_compute is None else f"x{row.inference_compute:.2f}"
        ax.text(ems[y] + 0.5, y, f"{ems[y]:.1f} %  ({params} params, compute {compute})", va="center", fontsize=8)
    ax.set_xlabel("test exact match (%)")
    ax.set_xlim(0, max([*ems, 1.0]) * 1.6)
    ax.set_title("Every model on the same test split")
    ax.grid(axis="x", alpha=0.3)
    return save_figure(fig, path)
