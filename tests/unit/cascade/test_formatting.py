import random

import pytest

from cascadelab.cascade.formatting import (
    final_answer,
    parse_steps,
    refiner_input,
    refiner_record,
    refiner_target,
    split_refiner_input,
)
from cascadelab.config import RefinerFormatSettings, RefinerSettings
from cascadelab.data.tasks import FAMILIES, get_family

WITH_COARSE = RefinerFormatSettings(use_coarse=True)


def test_input_places_coarse_between_markers():
    assert refiner_input("7*38=", "+662", WITH_COARSE) == "7*38=[COARSE]+662[REFINE]"


def test_input_without_coarse_leaves_the_slot_empty():
    assert refiner_input("7*38=", "+662", RefinerFormatSettings(use_coarse=False)) == "7*38=[COARSE][REFINE]"
    assert refiner_input("7*38=", None, WITH_COARSE) == "7*38=[COARSE][REFINE]"


def test_input_repeats_prompt_and_cleans_coarse():
    fmt = RefinerFormatSettings(use_coarse=True, repeat_prompt=True, max_coarse_chars=4)
    assert refiner_input("1+2=", " +30[REFINE]junk", fmt) == "1+2=[COARSE]+30j[REFINE]1+2="


def test_marker_in_prompt_is_an_error():
    with pytest.raises(ValueError, match=r"prompt '1\[COARSE\]=' contains a cascade marker"):
        refiner_input("1[COARSE]=", "x", WITH_COARSE)


def test_split_inverts_input_and_rejects_malformed():
    assert split_refiner_input("7*38=[COARSE]+662[REFINE]") == ("7*38=", "+662")
    assert split_refiner_input("7*38=[COARSE][REFINE]") == ("7*38=", "")
    for bad in ("7*38=", "7*38=[REFINE][COARSE]", "a[COARSE]b"):
        with pytest.raises(ValueError, match="expected '<prompt>\\[COARSE\\]<coarse>\\[REFINE\\]'"):
            split_refiner_input(bad)


def test_markers_are_single_tokens(tokenizer):
    ids = tokenizer("7*38=[COARSE]+662[REFINE]", add_special_tokens=False)["input_ids"]
    tokens = tokenizer.convert_ids_to_tokens(ids)
    assert tokens == ["7", "*", "3", "8", "=", "[COARSE]", "+", "6", "6", "2", "[REFINE]"]


def test_parse_takes_answer_after_last_separator():
    parsed = parse_steps("5100,0300,0010,0020,5400,5410:+5430")
    assert parsed.steps == ("5100", "0300", "0010", "0020", "5400", "5410")
    assert parsed.answer == "+5430" and parsed.well_formed
    assert parse_steps("a:b:+12").answer == "+12"
    assert parse_steps("a:b:+12").steps == ("a:b",)


def test_parse_without_separator_is_a_one_step_answer():
    parsed = parse_steps(" olleh ")
    assert parsed.steps == () and parsed.answer == "olleh" and parsed.well_formed


@pytest.mark.parametrize("text", ["", "  ", "12,:+3", "12,3:", ":+3", ",:"])
def test_malformed_steps(text):
    assert not parse_steps(text).well_formed


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_step_generators_verify_at_every_difficulty(name):
    family = get_family(name)
    rng = random.Random(5)
    for level in family.levels:
        for _ in range(40):
            item = family.sample(rng, level)
            parsed = parse_steps(item.steps)
            assert parsed.well_formed, item
            assert parsed.answer == item.response == final_answer(item.steps)
            assert family.verify(item.steps, item.answer)
            if name == "mul":
                assert len(parsed.steps) >= 2  # partial products (+ running sums)
            if name == "word":
                assert parsed.steps[0].split("=")[0].replace("+", "").replace("-", "").replace("*", "").isdigit()


def test_target_and_record():
    record = {
        "id": "mul1-x",
        "task": "mul",
        "difficulty": 1,
        "prompt": "7*38=",
        "response": "+662",
        "answer": "266",
        "steps": "650,012:+662",
        "coarse_correct": True,
    }
    assert refiner_target(record, RefinerFormatSettings(target="steps")) == "650,012:+662"
    assert refiner_target(record, RefinerFormatSettings(target="answer")) == "+662"
    per_family = RefinerFormatSettings(target="answer", family_targets={"mul": "steps"})
    assert refiner_target(record, per_family) == "650,012:+662"
    assert refiner_target({**record, "task": "word"}, per_family) == "+662"
    row = refiner_record(record, "+000", WITH_COARSE)
    assert row == {
        "id": "mul1-x",
        "task": "mul",
        "difficulty": 1,
        "prompt": "7*38=[COARSE]+000[REFINE]",
        "target": "650,012:+662",
        "answer": "266",
        "source_prompt": "7*38=",
        "coarse_correct": 1.0,
    }
    with pytest.raises(ValueError, match="record 'mul1-x': no 'steps' field to train on"):
        refiner_target({**record, "steps": ""}, RefinerFormatSettings())


def test_family_targets_must_name_trained_families() -> None:
    fmt = RefinerFormatSettings(family_targets={"expr": "steps"})
    with pytest.raises(ValueError, match=r"format\.family_targets\.expr: not a trained family"):
        RefinerSettings(mix={"mul": 1.0}, route_tasks=["mul"], format=fmt)
    fmt = RefinerFormatSettings(target="steps", family_targets={"word": "answer"})
    with pytest.raises(ValueError, match="strategy: adversarial needs target steps"):
        RefinerSettings(mix={"mul": 0.5, "word": 0.5}, route_tasks=["mul"], format=fmt, strategy="adversarial")


def test_the_refiner_reads_the_draft_by_default():
    fmt = RefinerFormatSettings()
    assert fmt.use_coarse and refiner_input("7*38=", "+000", fmt) == "7*38=[COARSE]+000[REFINE]"
    assert refiner_input("7*38=", "+000", RefinerFormatSettings(use_coarse=False)) == "7*38=[COARSE][REFINE]"
