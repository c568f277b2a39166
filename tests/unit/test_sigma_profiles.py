"""`sigma_pretrain.profile` expands into explicit settings; impossible combinations are one-line errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cascadelab.config import SIGMA_PROFILES, ParamsError, check_sigma_runtime, parse_params
from cascadelab.pipeline.sigma_pretrain import write_resolved_settings


def _section(**raw: Any) -> Any:
    return parse_params({"sigma_pretrain": raw}).sigma_pretrain


def test_each_profile_resolves_to_its_settings() -> None:
    standard = _section()
    assert standard.profile == "standard"
    assert standard.optimizer.name == "adamw"
    assert standard.features.model_dump() == SIGMA_PROFILES["standard"]["features"]
    minimal = _section(profile="minimal")
    assert not any(minimal.features.model_dump().values())
    full = _section(profile="full")
    assert full.optimizer.name == "c3o"
    assert all(full.features.model_dump().values())
    assert len(full.model.bitlinear_families) == 7


def test_an_explicit_key_wins_over_the_profile() -> None:
    section = _section(profile="full", features={"prefetch": False}, model={"bitlinear_families": ["mla_q"]})
    assert section.features.prefetch is False and section.features.c3o_credit is True
    assert section.model.bitlinear_families == ["mla_q"]
    assert section.optimizer.name == "c3o"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            {"profile": "full", "optimizer": {"name": "muon"}},
            "params.yaml: sigma_pretrain.features.c3o_credit: true needs optimizer.name: c3o (got muon)",
        ),
        (
            {"features": {"c3o_credit": True}},
            "params.yaml: sigma_pretrain.features.c3o_credit: true needs optimizer.name: c3o (got adamw)",
        ),
        (
            {"profile": "full", "optimizer": {"c3o": {"credit_interval": 500}}, "train": {"max_steps": 100}},
            "params.yaml: sigma_pretrain.optimizer.c3o.credit_interval: 500 is more than train.max_steps (100), "
            "so the credit would never update",
        ),
        (
            {"train": {"max_steps": 50, "warmup_steps": 50}},
            "params.yaml: sigma_pretrain.train.warmup_steps: 50 must be less than train.max_steps (50)",
        ),
        (
            {"profile": "turbo"},
            "params.yaml: sigma_pretrain.profile: must be 'minimal', 'standard' or 'full' (got 'turbo') "
            "— minimal | standard | full: expands into optimizer.name and features.*; keys set here win",
        ),
    ],
)
def test_impossible_combinations_are_one_line_errors(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(ParamsError) as error:
        parse_params({"sigma_pretrain": raw})
    assert str(error.value) == message


def test_triton_backend_without_cuda_fails_at_startup() -> None:
    section = _section(optimizer={"name": "gnprox", "gnprox": {"backend": "triton"}})
    with pytest.raises(ParamsError) as error:
        check_sigma_runtime(section, cuda_available=False)
    assert str(error.value) == (
        "params.yaml: sigma_pretrain.optimizer.gnprox.backend: triton needs a CUDA device (none available); "
        "use auto or ref"
    )
    check_sigma_runtime(section, cuda_available=True)
    check_sigma_runtime(_section(optimizer={"name": "gnprox"}), cuda_available=False)


def test_resolved_settings_are_written_as_they_run(tmp_path: Path) -> None:
    section = _section(profile="full")
    path = write_resolved_settings(section, 7, tmp_path)
    written = json.loads(path.read_text())
    assert written["seed"] == 7
    assert written["sigma_pretrain"]["optimizer"]["name"] == "c3o"
    assert written["sigma_pretrain"]["features"]["c3o_credit"] is True
    assert parse_params({"sigma_pretrain": written["sigma_pretrain"]}).sigma_pretrain == section


def test_the_rl_full_profile_enables_every_rl_subsystem_and_an_explicit_key_wins() -> None:
    full = parse_params({"sigma_rl": {"profile": "full"}}).sigma_rl
    assert full.optimizer.name == "c3o" and all(full.features.model_dump().values())
    minimal = parse_params({"sigma_rl": {"profile": "minimal", "features": {"auto_mix": True}}}).sigma_rl
    assert minimal.features.auto_mix and not minimal.features.causal_replay and not minimal.features.code_rl
