"""Hand-written figures in docs/ agree with the committed metrics/ and plots/ files they come from."""

from __future__ import annotations

from pathlib import Path

import pytest

from cascadelab.report.doc_figures import FIGURES, Figure, disagreements, refresh

ROOT = Path(__file__).resolve().parents[2]


def test_every_listed_figure_matches_its_source_file() -> None:
    assert disagreements(FIGURES, ROOT) == []


@pytest.fixture
def page(tmp_path: Path) -> Path:
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "x.json").write_text('{"draft_speedup": 0.995, "em": 25.31}')
    (tmp_path / "page.md").write_text("| em | 24.0 % | 15.8 % |\nwall speed-up **1.33×** on 1.33 tokens\n")
    return tmp_path


def test_a_stale_figure_is_reported_in_one_line(page: Path) -> None:
    figure = Figure("page.md", "metrics/x.json", "draft_speedup", "wall speed-up **{:.2f}×**")
    assert disagreements([figure], page) == [
        "page.md: expected 'wall speed-up **0.99×**' from metrics/x.json draft_speedup"
    ]


def test_refresh_rewrites_only_the_figure_on_its_line(page: Path) -> None:
    figures = [
        Figure("page.md", "metrics/x.json", "draft_speedup", "**{:.2f}×**"),
        Figure("page.md", "metrics/x.json", "em", "em | {:.1f} % |", line="| em |"),
    ]
    assert refresh(figures, page) == [
        "page.md: '**1.33×**' -> '**0.99×**'",
        "page.md: 'em | 24.0 % |' -> 'em | 25.3 % |'",
    ]
    assert (page / "page.md").read_text() == "| em | 25.3 % | 15.8 % |\nwall speed-up **0.99×** on 1.33 tokens\n"
    assert disagreements(figures, page) == []


def test_a_template_that_fits_two_places_is_refused(page: Path) -> None:
    figure = Figure("page.md", "metrics/x.json", "em", "| {:.1f} % |")
    with pytest.raises(
        ValueError, match=r"^page.md: 2 places of the form '\| \{:.1f\} % \|' \(figure em\); name its line$"
    ):
        disagreements([figure], page)
