"""Params profiles: the GPU profile validates and keeps the SIGMA comparison fair; overrides are checked keys."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cascadelab.config import TokenizerParams
from cascadelab.config.params import ParamsError
from cascadelab.config.profile import apply_overrides, flatten_overrides, load_profile, set_arguments
from cascadelab.data.tokenizer import train_tokenizer
from cascadelab.models.utils import count_parameters
from cascadelab.pipeline.sigma_pretrain import MODELS, build_model, check_param_gap

ROOT = Path(__file__).resolve().parents[3]


def test_the_gpu_profile_validates_and_turns_on_bf16_and_larger_models():
    flat, params = load_profile("gpu", ROOT / "params.yaml", ROOT / "profiles")
    assert params.coarse_sft.train.bf16 and params.refiner.train.bf16
    assert params.coarse_sft.model.hidden_size == 512 and params.sigma_pretrain.model.use_triton
    assert flat["hybrid_rnn.model.preset"] == "seed"


def test_the_gpu_profile_keeps_the_llama_baseline_within_tolerance_of_sigma():
    _, params = load_profile("gpu", ROOT / "params.yaml", ROOT / "profiles")
    tokenizer = train_tokenizer(["0123456789+-*=() abcdefghijklmnopqrstuvwxyz?"], TokenizerParams(kind="char"))
    sizes = {name: count_parameters(build_model(name, params.sigma_pretrain, tokenizer, 0)) for name in MODELS}
    assert check_param_gap(sizes["sigma"], sizes["baseline"], params.sigma_pretrain.baseline_param_tolerance) < 0.05


def test_set_arguments_are_dvc_overrides_with_json_values():
    flat = flatten_overrides({"a": {"b": 1, "c": {"d": True}}, "e": "seed", "f": [1, 2]})
    assert flat == {"a.b": 1, "a.c.d": True, "e": "seed", "f": [1, 2]}
    assert set_arguments(flat) == ["-S", "a.b=1", "-S", "a.c.d=true", "-S", 'e="seed"', "-S", "f=[1, 2]"]


def test_an_override_of_a_key_params_yaml_lacks_is_one_line_naming_it():
    with pytest.raises(ParamsError) as error:
        apply_overrides({"coarse_sft": {"train": {"bf16": False}}}, {"coarse_sft.train.bf61": True}, "profiles/x.yaml")
    assert str(error.value) == (
        "profiles/x.yaml: coarse_sft.train.bf61: not a key of params.yaml (set it there first, then override it)"
    )


def test_a_profile_value_the_schema_refuses_names_the_key(tmp_path):
    (tmp_path / "bad.yaml").write_text("coarse_sft:\n  train: {batch_size: 0}\n")
    with pytest.raises(ParamsError, match=r"\+ .*bad.yaml: coarse_sft.train.batch_size: "):
        load_profile("bad", ROOT / "params.yaml", tmp_path)


def test_an_unknown_profile_lists_the_known_ones(tmp_path):
    shutil.copy(ROOT / "profiles" / "gpu.yaml", tmp_path / "gpu.yaml")
    with pytest.raises(ParamsError) as error:
        load_profile("tpu", ROOT / "params.yaml", tmp_path)
    assert str(error.value) == f"{tmp_path / 'tpu.yaml'}: no such profile (known: gpu)"


def test_the_command_line_prints_the_overrides_make_repro_gpu_passes_to_dvc():
    out = subprocess.run(
        [sys.executable, "-m", "cascadelab.config.profile", "gpu"],
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert out[:2] == ["-S", "coarse_sft.model.hidden_size=512"] and "coarse_sft.train.bf16=true" in out
