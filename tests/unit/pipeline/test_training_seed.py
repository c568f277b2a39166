"""`training_seed`: prepare splits the corpus by `seed`, the stages after it train from `training_seed` (null: seed)."""

import importlib.util
import sys
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest
import yaml

from cascadelab.config import ParamsError, parse_params

DVC = yaml.safe_load(Path("dvc.yaml").read_text(encoding="utf-8"))["stages"]
NOT_TRAINING = ("prepare", "report", "acoc")  # prepare: the data seed; report: its bootstrap; acoc: its own seeds


class _CalledError(Exception):
    """Raised by the fake stage logic: the stage handed it these seeds."""


def _stage_script(stage: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"_stage_{stage}", Path("stages") / f"{stage}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _seeds_given(stage: str, raw: dict, monkeypatch: pytest.MonkeyPatch) -> tuple[int, dict]:
    """The seed (and keyword arguments) the stage script passes its pipeline logic, under params `raw`."""
    script = _stage_script(stage)

    @contextmanager
    def no_run(*_args, **_kwargs):
        yield SimpleNamespace(log_metrics=lambda *a, **k: None, log_artifact=lambda *a, **k: None)

    def fake_run(_section, seed, *_args, **kwargs):
        raise _CalledError(seed, kwargs)

    monkeypatch.setattr(script, "load_or_fail", lambda: parse_params(raw))
    monkeypatch.setattr(script, "stage_context", no_run)
    monkeypatch.setattr(sys.modules[f"cascadelab.pipeline.{stage}"], "run", fake_run)
    with pytest.raises(_CalledError) as called:
        script.main()
    seed, kwargs = called.value.args
    return seed, kwargs


def test_null_training_seed_falls_back_to_the_seed():
    assert parse_params({"seed": 7}).train_seed == 7
    assert parse_params({"seed": 7, "training_seed": 2}).train_seed == 2
    assert parse_params({"seed": 7, "training_seed": 0}).train_seed == 0  # 0 is a seed, not "unset"


@pytest.mark.parametrize(("stage", "expected"), [("prepare", 7), ("coarse_sft", 2), ("hybrid_rnn", 2)])
def test_prepare_splits_by_seed_and_training_stages_train_from_training_seed(stage, expected, monkeypatch):
    assert _seeds_given(stage, {"seed": 7, "training_seed": 2}, monkeypatch)[0] == expected
    assert _seeds_given(stage, {"seed": 7}, monkeypatch)[0] == 7


def test_sigma_rl_trains_from_training_seed_and_splits_its_held_out_prompts_by_seed(monkeypatch):
    seed, kwargs = _seeds_given("sigma_rl", {"seed": 7, "training_seed": 2}, monkeypatch)
    assert (seed, kwargs["data_seed"]) == (2, 7)


def test_dvc_reruns_training_stages_but_not_prepare_when_only_training_seed_changes():
    listing = {stage: spec.get("params", []) for stage, spec in DVC.items()}
    assert "training_seed" not in listing["prepare"]
    seeded = {stage for stage, keys in listing.items() if "seed" in keys and stage not in NOT_TRAINING}
    assert seeded >= {"coarse_sft", "cascade_pairs", "refiner", "hybrid_rnn", "sigma_pretrain", "sigma_rl"}
    assert {stage for stage in seeded if "training_seed" not in listing[stage]} == set()


def test_a_negative_training_seed_is_one_line():
    expected = r"^params.yaml: training_seed: must be greater than or equal to 0 \(got -1\) — seed of the stages after"
    with pytest.raises(ParamsError, match=expected):
        parse_params({"training_seed": -1})
