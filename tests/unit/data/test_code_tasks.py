"""The code task family: gold answers verify in the sandbox at every level, wrong ones do not; prepare's checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from cascadelab.config import PrepareParams
from cascadelab.data.code_tasks import LEVELS, build_code_splits, level_items
from cascadelab.data.corpus import normalise_prompt
from cascadelab.pipeline.prepare import prepare
from cascadelab.pipeline.sigma_rl import build_cascade, code_spec
from cascadelab.sandbox import Limits, Sandbox
from cascadelab.training.sigma.verifier import VerifierCascade


@pytest.fixture(scope="module")
def cascade() -> VerifierCascade:
    box = Sandbox(Limits(wall_seconds=5.0, cpu_seconds=2))
    box.warm_up()
    return build_cascade({"answer_format": "reversed"}, [], box, format_weight=0.1, asymmetric=True)


def _one_per_template(level: int) -> list[dict]:
    splits = build_code_splits([level], 400, 40, 40, seed=3)
    seen: dict[str, dict] = {}
    for record in splits["train"] + splits["val"] + splits["test"]:
        seen.setdefault(record["template"], record)
    return list(seen.values())


@pytest.mark.parametrize("level", LEVELS)
def test_every_template_s_gold_answer_passes_every_test_and_a_wrong_one_fails(
    level: int, cascade: VerifierCascade
) -> None:
    records = _one_per_template(level)
    assert len(records) >= 2
    for record in records:
        spec = code_spec(record)
        gold = cascade.reward("code", record["response"], spec)
        assert (gold.value, gold.correctness) == (1.0, 1.0), record["prompt"]
        wrong = record["response"].replace("+", "-") if "+" in record["response"] else record["response"] + "+1"
        assert cascade.reward("code", wrong, spec).correctness < 1.0, (record["prompt"], wrong)


def test_an_expression_must_use_the_numbers_it_names(cascade: VerifierCascade) -> None:
    record = next(r for r in level_items(1) if r.prompt == "an expression using 6 and 7 that equals 42=")
    spec = code_spec({"tests": [{"expression": e, "expected": v} for e, v in record.tests], "required": [6, 7]})
    assert record.solution == "6*7"
    assert cascade.reward("code", "6*7", spec).value == 1.0
    assert cascade.reward("code", "40+2", spec).value == 0.0  # right value, wrong numbers: fails the cheap check
    assert cascade.reward("code", "6*", spec).value == 0.0  # does not parse


def test_splits_are_disjoint_seeded_and_sized() -> None:
    splits = build_code_splits(LEVELS, 400, 40, 40, seed=1234)
    keys = {name: {normalise_prompt(r["prompt"]) for r in rows} for name, rows in splits.items()}
    assert not keys["train"] & keys["val"] and not keys["train"] & keys["test"] and not keys["val"] & keys["test"]
    assert {name: len(rows) for name, rows in splits.items()} == {"train": 622, "val": 86, "test": 86}
    assert build_code_splits(LEVELS, 400, 40, 40, seed=1234) == splits
    assert build_code_splits(LEVELS, 400, 40, 40, seed=7)["test"] != splits["test"]


def test_prepare_writes_the_code_tasks_and_fails_in_one_line_when_an_item_does_not_round_trip(tmp_path: Path) -> None:
    params = PrepareParams.model_validate(
        {
            "families": {"reverse": {"difficulties": [1]}, "mul": {"difficulties": [1]}},
            "sizes": {"train": 80, "val": 4, "test": 4},
            "code": {"levels": [1], "sizes": {"train": 20, "val": 4, "test": 4}},
        }
    )
    metrics = prepare(params, 1, tmp_path / "corpus", tmp_path / "tokenizer", tmp_path / "code")
    assert (metrics["code_train_size"], metrics["code_val_size"], metrics["code_test_size"]) == (20, 4, 4)
    assert sorted(p.name for p in (tmp_path / "code").iterdir()) == [
        "meta.json",
        "test.jsonl",
        "train.jsonl",
        "val.jsonl",
    ]
    alphabet_only = params.tokenizer.model_copy(update={"byte_fallback": False})  # with it, every item round-trips
    no_letters = params.model_copy(update={"families": {"mul": params.families["mul"]}, "tokenizer": alphabet_only})
    with pytest.raises(ValueError) as error:
        prepare(no_letters, 1, tmp_path / "c2", tmp_path / "t2", tmp_path / "code2")
    assert str(error.value).startswith("prepare.code: '") and str(error.value).endswith(
        "' does not round-trip through the corpus tokenizer"
    )
    assert not (tmp_path / "code2").exists() and not (tmp_path / "c2").exists()
