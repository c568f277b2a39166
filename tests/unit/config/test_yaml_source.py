"""params.yaml as a stage reads it: YAML 1.2 scalars, duplicate keys refused, `<file>:<line>:<col>` errors."""

import pytest

from cascadelab.config import ParamsError, load_params
from cascadelab.pipeline.runtime import load_or_fail


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "seed: 1\ncoarse_sft:\n  train:\n  bf16: true\n   x: 1\n",
            "params.yaml:5:5: not valid YAML (mapping values are not allowed here)",
        ),
        (
            "seed: [1\n",
            "params.yaml:2:1: not valid YAML (expected ',' or ']', but got '<stream end>', "
            "while parsing a flow sequence at line 1, column 7)",
        ),
        (
            "seed: 1\ncoarse_sft:\n  train:\n    bf16: false\n    bf16: true\n",
            "params.yaml:5:5: not valid YAML (duplicate key 'bf16', first given at line 4)",
        ),
        (
            "seed: 1\n\tlaunch: {}\n",
            "params.yaml:2:1: not valid YAML (found character '\\t' that cannot start any token)",
        ),
    ],
)
def test_a_yaml_error_is_one_line_with_file_line_and_column(tmp_path, text, message):
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(ParamsError) as caught:
        load_params(path)
    assert str(caught.value).replace(f"{tmp_path}/", "") == message


def test_a_stage_run_directly_prints_the_yaml_error_as_its_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("seed: 1\nprepare:\n  sizes: {train: 10\n")
    with pytest.raises(SystemExit) as exit_:
        load_or_fail()
    assert exit_.value.code == 2
    assert capsys.readouterr().err == (
        "error: params.yaml:4:1: not valid YAML (expected ',' or '}', but got '<stream end>', "
        "while parsing a flow mapping at line 3, column 10)\n"
    )


def test_scalars_read_as_yaml_1_2_as_dvc_reads_them(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("coarse_sft:\n  train:\n    learning_rate: 2e-3\n    bf16: yes\n")
    with pytest.raises(ParamsError) as caught:
        load_params(path)  # `yes` is a string in YAML 1.2 (and to DVC), not a boolean
    assert str(caught.value).startswith(f"{path}: coarse_sft.train.bf16: must be a boolean (got the string 'yes')")
    path.write_text("coarse_sft:\n  train:\n    learning_rate: 2e-3\n    bf16: true\n")
    train = load_params(path).coarse_sft.train
    assert train.learning_rate == 0.002 and train.bf16 is True
