"""params.yaml's comments are the schema's field descriptions, and documenting never changes a value."""

from pathlib import Path

import yaml

from cascadelab.config import Params
from cascadelab.config.document import document, main

ROOT = Path(__file__).resolve().parents[3]


def test_params_yaml_is_in_sync_with_the_schema():
    text = (ROOT / "params.yaml").read_text()
    assert document(text) == text, "run: python -m cascadelab.config.document"


def test_every_key_of_params_yaml_carries_its_description():
    text = (ROOT / "params.yaml").read_text()
    raw = yaml.safe_load(text)
    lines = text.splitlines()

    def check(mapping, model, indent):
        for key, value in mapping.items():
            field = model.model_fields[key]
            assert field.description, f"{key}: no description"
            assert any(
                line.startswith(" " * indent + f"{key}:") and line.endswith(f"# {field.description}") for line in lines
            ), key
            section = getattr(field.annotation, "model_fields", None)
            if isinstance(value, dict) and section is not None and value:
                check(value, field.annotation, indent + 2)

    check(raw, Params, 0)


def test_documenting_keeps_keys_values_order_and_notes():
    old = (
        "# header\nseed: 7   # stale\n\ncoarse_sft:\n  mix: {word: 1.0, add: 0.5}\n"
        "  # a note on the rate\n  train: {learning_rate: 1.0e-3, max_steps: 3}\n"
    )
    new = document(old)
    assert yaml.safe_load(new) == yaml.safe_load(old)
    assert list(yaml.safe_load(new)["coarse_sft"]["mix"]) == ["word", "add"]
    assert "# header\n" in new and "  # a note on the rate\n  train:" in new and "stale" not in new
    assert f"# {Params.model_fields['seed'].description}" in new
    assert document(new) == new


def test_check_mode_reports_a_stale_file(tmp_path, capsys):
    path = tmp_path / "params.yaml"
    path.write_text("seed: 7   # stale\n")
    assert main([str(path), "--check"]) == 1
    assert main([str(path)]) == 0
    assert main([str(path), "--check"]) == 0
    assert "out of sync" in capsys.readouterr().out
