"""The one table of stage paths agrees with dvc.yaml, and stage code uses only the paths its stage declares."""

from __future__ import annotations

import ast
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
import yaml

from cascadelab.data.hidden_eval import manifest_path
from cascadelab.pipeline.paths import PATHS, STAGES, Paths

DVC = yaml.safe_load(Path("dvc.yaml").read_text(encoding="utf-8"))["stages"]


def _names(entries: list[Any]) -> list[str]:
    return [entry if isinstance(entry, str) else next(iter(entry)) for entry in entries]


def _covers(folder: str, path: str) -> bool:
    return path == folder or path.startswith(f"{folder}/")


def test_every_dvc_stage_has_an_entry_and_a_pipeline_module() -> None:
    assert set(STAGES) == set(DVC)
    for stage in STAGES:
        assert Path(f"src/cascadelab/pipeline/{stage}.py").is_file(), stage


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_declared_deps_and_outs_are_the_stages_data_deps_and_outs_in_dvc_yaml(stage: str) -> None:
    spec, io = DVC[stage], STAGES[stage]
    data_deps = [dep for dep in spec["deps"] if not dep.startswith(("src/", "stages/"))]
    declared = [getattr(PATHS, name).as_posix() for name in io.deps]
    assert all(any(_covers(folder, dep) for folder in declared) for dep in data_deps), (data_deps, declared)
    assert all(any(_covers(folder, dep) for dep in data_deps) for folder in declared), (data_deps, declared)
    plots = PATHS.plots_of(stage).as_posix()
    outs = [out for out in _names(spec["outs"]) if not _covers(plots, out)] if "outs" in spec else []
    assert sorted(outs) == sorted(getattr(PATHS, name).as_posix() for name in io.outs)
    files = _names(spec.get("outs", [])) + _names(spec.get("plots", [])) + _names(spec.get("metrics", []))
    assert all(_covers(plots, f) or f in outs or f == f"metrics/{stage}.json" for f in files), files


def _path_attributes(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in ("paths", "PATHS")
    }


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_a_stage_reads_and_writes_only_the_paths_it_declares(stage: str) -> None:
    io = STAGES[stage]
    used = _path_attributes(Path(f"stages/{stage}.py")) | _path_attributes(Path(f"src/cascadelab/pipeline/{stage}.py"))
    helpers = {"plots_of", "metrics_of", "details_of", "timing_of", "figures_of"}
    assert used <= {*io.deps, *io.outs, *helpers}, used - {*io.deps, *io.outs}


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_every_stage_declares_its_details_and_timing_files_as_plain_uncached_outputs_not_metrics(stage: str) -> None:
    spec = DVC[stage]
    metrics, *plain = (path.as_posix() for path in PATHS.figures_of(stage))
    outs = {name: entry[name] for entry in spec["outs"] if isinstance(entry, dict) for name in entry}
    assert [outs.get(path) for path in plain] == [{"cache": False}] * 2
    assert _names(spec["metrics"]) == [metrics]
    assert not set(plain) & set(_names(spec.get("plots", [])))


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_a_stage_script_is_wiring_that_calls_its_pipeline_module(stage: str) -> None:
    text = Path(f"stages/{stage}.py").read_text(encoding="utf-8")
    assert len(text.splitlines()) < 80
    assert f"from cascadelab.pipeline import {stage}\n" in text and f"{stage}.run(" in text
    assert 'Path("' not in text  # paths come from pipeline/paths.py


def test_the_hidden_eval_manifest_lands_in_the_declared_folder() -> None:
    assert manifest_path(PATHS.corpus).parent == PATHS.hidden_eval


def test_paths_under_a_root_keep_the_layout(tmp_path: Path) -> None:
    moved = Paths.under(tmp_path)
    for field in fields(Paths):
        assert getattr(moved, field.name) == tmp_path / getattr(PATHS, field.name)
    assert moved.plots_of("limen") == tmp_path / "plots" / "limen"
    assert moved.metrics_of("limen") == tmp_path / "metrics" / "limen.json"
    assert moved.timing_of("limen") == tmp_path / "plots" / "limen" / "timing.json"
    assert moved.details_of("limen") == tmp_path / "plots" / "limen" / "details.json"
    assert moved.figures_of("limen") == (moved.metrics_of("limen"), moved.details_of("limen"), moved.timing_of("limen"))
