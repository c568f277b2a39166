"""`cascadelab.plotting`: figures are written whole as PNG, closed, and a failed write leaves nothing behind."""

import pytest

from cascadelab.plotting import pyplot, save_figure


def test_a_saved_figure_is_a_png_at_the_path_and_is_closed(tmp_path):
    plt = pyplot()
    figure, axis = plt.subplots()
    axis.plot([0, 1], [1, 0])
    path = save_figure(figure, tmp_path / "sub" / "curve.png", dpi=50)
    assert path == tmp_path / "sub" / "curve.png"
    assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert figure.number not in plt.get_fignums()
    assert sorted(p.name for p in path.parent.iterdir()) == ["curve.png"]


def test_a_failed_write_keeps_the_previous_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "curve.png"
    path.write_bytes(b"previous")
    figure, _ = pyplot().subplots()
    with pytest.raises(ValueError):
        save_figure(figure, path, dpi=-1)
    assert path.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["curve.png"]
