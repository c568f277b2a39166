"""sigma_pretrain library: corpus batches, model building from params, the size check."""

from __future__ import annotations

import typing

import pytest
import torch

from cascadelab.config import SigmaBitLinearFamily, SigmaModelParams, TokenizerParams, parse_params
from cascadelab.data.mixed_batches import TokenizedRows, count_tokens, mixed_batches
from cascadelab.data.tokenizer import train_tokenizer
from cascadelab.models.coarse import build_causal_lm, count_parameters
from cascadelab.models.sigma import BITLINEAR_FAMILIES
from cascadelab.training.sigma_pretrain import build_sigma_lm, check_param_gap

RECORDS = [
    {"task": "add", "prompt": "12+30=", "response": "+24"},
    {"task": "add", "prompt": "1+2=", "response": "+3"},
    {"task": "rev", "prompt": "rev abcd=", "response": "dcba"},
    {"task": "rev", "prompt": "rev xy=", "response": "yx"},
]


@pytest.fixture(scope="module")
def tokenizer():  # type: ignore[no-untyped-def]
    return train_tokenizer([r["prompt"] + r["response"] for r in RECORDS], TokenizerParams(kind="char"))


def test_rows_put_the_loss_on_the_response_and_eos_and_pad_on_the_right(tokenizer) -> None:  # type: ignore[no-untyped-def]
    rows = TokenizedRows(tokenizer, RECORDS)
    batch = rows.collate([1, 0])
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    assert batch["input_ids"].shape == (2, 10)  # "12+30=+24" + EOS
    assert tokenizer.decode(batch["input_ids"][0, :6]) == "1+2=+3"
    assert batch["input_ids"][0, 6].item() == eos and (batch["input_ids"][0, 7:] == pad).all()
    assert batch["labels"][0].tolist()[:7] == [-100] * 4 + batch["input_ids"][0, 4:7].tolist()
    assert (batch["labels"][0, 7:] == -100).all()
    assert count_tokens(batch, pad) == (7 + 10, 3 + 4)  # targets: "+3" EOS and "+24" EOS


def test_mixed_batches_follow_the_mix_one_task_per_batch_and_repeat_with_the_seed(tokenizer) -> None:  # type: ignore[no-untyped-def]
    rows = TokenizedRows(tokenizer, RECORDS)
    first = list(mixed_batches(rows, {"add": 1.0, "rev": 0.0}, 5, 3, seed=7))
    again = list(mixed_batches(rows, {"add": 1.0, "rev": 0.0}, 5, 3, seed=7))
    assert len(first) == 5 and all(b["input_ids"].shape[0] == 3 for b in first)
    assert all(torch.equal(a["input_ids"], b["input_ids"]) for a, b in zip(first, again, strict=True))
    plus = tokenizer.convert_tokens_to_ids("+")
    assert all((b["input_ids"] == plus).any(dim=1).all() for b in first)  # add rows only
    mixed = list(mixed_batches(rows, {"add": 1.0, "rev": 1.0}, 40, 2, seed=0))
    kinds = {bool((b["input_ids"] == plus).any(dim=1).all()) for b in mixed}
    assert kinds == {True, False}
    assert all(len({bool((row == plus).any()) for row in b["input_ids"]}) == 1 for b in mixed)


def test_mix_naming_a_missing_task_is_an_error(tokenizer) -> None:  # type: ignore[no-untyped-def]
    rows = TokenizedRows(tokenizer, RECORDS)
    with pytest.raises(ValueError, match=r"^mix\.mul: no training rows for this task in the corpus$"):
        next(mixed_batches(rows, {"mul": 1.0}, 1, 2, seed=0))


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
    baseline = count_parameters(build_causal_lm(params.baseline, tokenizer))
    assert check_param_gap(sigma, baseline, params.baseline_param_tolerance) < 0.02


def test_params_bitlinear_families_match_the_model_library() -> None:
    assert typing.get_args(SigmaBitLinearFamily) == BITLINEAR_FAMILIES
