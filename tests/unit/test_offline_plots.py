"""Offline plots: every DVC plot of the committed tables renders to a PNG, and an empty one is refused by name."""

import subprocess
import sys
from pathlib import Path

import pytest

from cascadelab.report.offline_plots import dvc_plot_specs, empty_reason, file_name, render_plots

ROOT = Path(__file__).resolve().parents[2]
PNG = b"\x89PNG\r\n\x1a\n"


def line_spec(rows, x_type="quantitative"):
    return {
        "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
        "data": {"values": rows},
        "layer": [
            {
                "mark": "line",
                "encoding": {"x": {"field": "step", "type": x_type}, "y": {"field": "loss", "type": "quantitative"}},
            }
        ],
    }


def test_a_categorical_x_on_a_linear_template_is_empty_and_says_which_field():
    spec = line_spec([{"step": "add", "loss": "1.0"}, {"step": "sub", "loss": "2.0"}])
    assert empty_reason(spec) == (
        "'step' is on a quantitative axis but holds no numbers (e.g. 'add'): use a bar template"
    )
    assert empty_reason(line_spec([])) == "no data rows"
    assert empty_reason(line_spec([{"step": "1", "loss": "0.5"}])) is None


def test_render_writes_a_png_per_plot_and_an_index(tmp_path):
    specs = {"plots/stage/train.tsv": line_spec([{"step": "1", "loss": "2"}, {"step": "2", "loss": "1"}])}
    written = render_plots(specs, tmp_path)
    assert [path.name for path in written] == ["stage-train.png"]
    assert written[0].read_bytes().startswith(PNG)
    assert 'src="stage-train.png"' in (tmp_path / "index.html").read_text()


def test_an_empty_plot_stops_the_render_before_anything_is_written(tmp_path):
    specs = {"ok": line_spec([{"step": "1", "loss": "1"}]), "bad": line_spec([])}
    with pytest.raises(ValueError, match=r"^empty plots: bad: no data rows$"):
        render_plots(specs, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_file_names_are_flat_and_safe():
    assert file_name("plots/coarse_sft/train.tsv") == "coarse_sft-train.png"
    assert file_name("acoc validation loss per cycle") == "acoc-validation-loss-per-cycle.png"


def test_every_committed_dvc_plot_renders_offline(tmp_path):
    specs = dvc_plot_specs(ROOT)
    assert len(specs) >= 20
    out = subprocess.run(
        [sys.executable, "-m", "cascadelab.report.offline_plots", "--out", str(tmp_path)],
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT / "src"), "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"},
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    pngs = sorted(tmp_path.glob("*.png"))
    assert len(pngs) == len(specs) and all(path.read_bytes().startswith(PNG) for path in pngs)
