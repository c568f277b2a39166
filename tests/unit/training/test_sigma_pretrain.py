"""sigma_pretrain library: model building from params, the size check."""

from __future__ import annotations

import typing

import pytest
from tests.unit.data.tiny_records import records_tokenizer

from cascadelab.config import SigmaBitLinearFamily, SigmaModelParams, parse_params
from cascadelab.models.coarse import build_causal_lm
from cascadelab.models.sigma import BITLINEAR_FAMILIES
from cascadelab.models.utils import count_parameters
from cascadelab.pipeline.sigma_pretrain import build_sigma_lm, check_param_gap


@pytest.fixture(scope="module")
def tokenizer():  # type: ignore[no-untyped-def]
    return records_tokenizer()


def test_sigma_is_built_from_preset_knobs_and_overrides_with_tokenizer_ids(tokenizer) -> None:  # type: ignore[no-untyped-def]
    params = SigmaModelParams(
        preset="tiny", num_layers=3, mamba_ratio=2, attention_ratio=1, overrides={"ssm_state_size": 8}
    )
    model = build_sigma_lm(params, tokenizer)
    config = model.config
    assert config.num_hidden_layers == 3 and config.block_types == ["mamba", "mamba", "mla"]
    assert config.ssm_state_size == 8 and config.hidden_size == 32
    assert config.vocab_size == len(tokenizer) and config.eos_token_id == tokenizer.eos_token_id


def test_bad_sigma_overrides_name_the_key(tokenizer) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=r"^sigma_pretrain\.model\.overrides\.ssm_sise: not a SigmaConfig argument$"):
        build_sigma_lm(SigmaModelParams(overrides={"ssm_sise": 8}), tokenizer)
    with pytest.raises(ValueError, match=r"^sigma_pretrain\.model: moe_top_k \(5\) exceeds moe_num_routed_experts"):
        build_sigma_lm(SigmaModelParams(moe_top_k=5), tokenizer)


def test_param_gap_beyond_tolerance_is_an_error() -> None:
    assert check_param_gap(1000, 1040, 0.05) == pytest.approx(0.04)
    with pytest.raises(ValueError) as error:
        check_param_gap(1000, 1100, 0.05)
    assert str(error.value) == (
        "sigma_pretrain.baseline: 1100 parameters vs SigmaLLM's 1000 (10.0 % apart, more than "
        "baseline_param_tolerance 5.0 %); resize the baseline"
    )


def test_default_baseline_matches_default_sigma_within_tolerance(tokenizer) -> None:  # type: ignore[no-untyped-def]
    params = parse_params({}).sigma_pretrain
    sigma = count_parameters(build_sigma_lm(params.model, tokenizer))
    baseline = count_parameters(build_causal_lm(params.baseline.to_config(tokenizer)))
    assert check_param_gap(sigma, baseline, params.baseline_param_tolerance) < 0.02


def test_params_bitlinear_families_match_the_model_library() -> None:
    assert typing.get_args(SigmaBitLinearFamily) == BITLINEAR_FAMILIES
