"""Every DVC plot as a static PNG, rendered with no network (`make plots`).

`dvc plots show` writes an HTML page that loads vega from a CDN, so it is blank offline. Here DVC fills
its own templates (`dvc plots show --json`: vega-lite specs with the data inlined) and vl-convert, which
bundles vega, renders each one to PNG. `index.html` beside the images shows them all, offline.

    PYTHONPATH=src python -m cascadelab.report.offline_plots [--out plots/rendered]
"""

from __future__ import annotations

import argparse
import html
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import vl_convert

DEFAULT_OUT = Path("plots/rendered")
POSITION_CHANNELS = ("x", "y")


def dvc_plot_specs(root: Path = Path(".")) -> dict[str, dict[str, Any]]:
    """Plot id → the vega-lite spec DVC renders for it (workspace revision, data inlined)."""
    result = subprocess.run(
        [sys.executable, "-m", "dvc", "plots", "show", "--json"], cwd=root, capture_output=True, text=True
    )
    if result.returncode:
        raise RuntimeError(f"dvc plots show --json failed: {result.stderr.strip().splitlines()[-1:]}")
    specs: dict[str, dict[str, Any]] = {}
    for plot_id, items in json.loads(result.stdout)["data"].items():
        vega = [item["content"] for item in items if item.get("type") == "vega"]
        if vega:
            specs[plot_id] = vega[0]
    return specs


def _is_number(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def _encodings(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """The position encodings of the spec and of its layers (DVC's templates nest marks in layers)."""
    found = [spec.get("encoding", {}).get(channel, {}) for channel in POSITION_CHANNELS]
    for layer in spec.get("layer", []):
        found += _encodings(layer)
    return [encoding for encoding in found if encoding.get("field")]


def empty_reason(spec: dict[str, Any]) -> str | None:
    """Why the rendered plot would show no marks (no rows; a quantitative axis over non-numbers), or None."""
    rows = spec.get("data", {}).get("values", [])
    if not rows:
        return "no data rows"
    for encoding in _encodings(spec):
        field = encoding["field"]
        if encoding.get("type") == "quantitative" and not any(_is_number(row.get(field)) for row in rows):
            sample = next((row.get(field) for row in rows if field in row), None)
            return f"{field!r} is on a quantitative axis but holds no numbers (e.g. {sample!r}): use a bar template"
    return None


def file_name(plot_id: str) -> str:
    """A file name for a plot id (`plots/coarse_sft/train.tsv` → `coarse_sft-train.png`)."""
    stem = re.sub(r"^plots/", "", plot_id)
    stem = re.sub(r"\.(tsv|csv|json|yaml)$", "", stem)
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", stem).strip("-") + ".png"


def render_plots(specs: dict[str, dict[str, Any]], out_dir: Path, scale: float = 2.0) -> list[Path]:
    """Write one PNG per plot and an `index.html` showing them; ValueError naming every plot that would be empty."""
    empty = {plot_id: reason for plot_id, spec in specs.items() if (reason := empty_reason(spec))}
    if empty:
        raise ValueError("empty plots: " + "; ".join(f"{plot_id}: {reason}" for plot_id, reason in empty.items()))
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for plot_id, spec in specs.items():
        path = out_dir / file_name(plot_id)
        path.write_bytes(vl_convert.vegalite_to_png(spec, scale=scale))
        written.append(path)
    figures = "\n".join(
        f'<figure><img src="{html.escape(path.name)}" width="480">'
        f"<figcaption>{html.escape(plot_id)}</figcaption></figure>"
        for plot_id, path in zip(specs, written, strict=True)
    )
    (out_dir / "index.html").write_text(
        f"<!doctype html><meta charset='utf-8'><title>cascadelab plots</title>\n"
        f"<style>figure{{display:inline-block;margin:8px}}</style>\n{figures}\n"
    )
    return written


def main(argv: list[str] | None = None) -> None:
    """Render the workspace's DVC plots to PNGs under --out."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder of the PNGs and index.html")
    args = parser.parse_args(argv)
    try:
        written = render_plots(dvc_plot_specs(), args.out)
    except (RuntimeError, ValueError) as error:
        sys.exit(f"error: {error}")
    print(f"{len(written)} plots written to {args.out}/ (open {args.out / 'index.html'})")


if __name__ == "__main__":
    main()
