import random

import pytest

from cascadelab.data.answers import final_segment, format_number, parse_number
from cascadelab.data.tasks import FAMILIES, ExprFamily, get_family


def test_reversed_format_is_signed_reversed_and_padded():
    assert format_number(38, 3, "reversed") == "+830"
    assert format_number(-8, 2, "reversed") == "-80"
    assert format_number(0, 2, "reversed") == "+00"
    assert format_number(38, 3, "plain") == "38"


def test_reversed_parse_inverts_format():
    for value in (-99, -8, 0, 7, 38, 198):
        assert parse_number(format_number(value, 3, "reversed"), "reversed") == value


@pytest.mark.parametrize("text", ["", "830", "+8a0", "+", "++830", "+830 junk", "eight"])
def test_malformed_numbers_do_not_parse(text):
    assert parse_number(text, "reversed") is None


def test_width_overflow_is_an_error():
    with pytest.raises(ValueError, match="does not fit an answer width of 2"):
        format_number(123, 2, "reversed")


@pytest.mark.parametrize("name", sorted(FAMILIES))
@pytest.mark.parametrize("style", ["reversed", "plain"])
def test_every_item_verifies_its_own_response_and_steps(name, style):
    family = get_family(name, style)
    rng = random.Random(0)
    for difficulty in family.levels:
        for _ in range(50):
            item = family.sample(rng, difficulty)
            assert family.verify(item.response, item.answer), item
            assert family.verify(item.steps, item.answer), item
            assert final_segment(item.steps) == item.response


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_wrong_and_malformed_outputs_fail(name):
    family = get_family(name)
    item = family.sample(random.Random(1), 1)
    other = family.sample(random.Random(2), 1)
    assert item.answer != other.answer
    assert not family.verify(other.response, item.answer)
    for junk in ("", "???", item.response + "x", " :"):
        assert not family.verify(junk, item.answer)


def test_add_item_exact_values():
    item = get_family("add").sample(random.Random(3), 2)
    a, b = (int(x) for x in item.prompt.rstrip("=").split("+"))
    assert item.answer == str(a + b)
    assert item.response == "+" + str(a + b).zfill(3)[::-1]


def test_mul_steps_are_partial_products_then_running_sums():
    family = get_family("mul")
    assert family._steps(15, 23, 4, "+5430") == "5100,0300,0010,0020,5400,5410:+5430"
    assert family._steps(7, 38, 3, "+662") == "650,012:+662"


def test_expr_reduces_multiplication_first_then_left_to_right():
    assert ExprFamily._reduce([3, 4, 3], ["+", "*"]) == [12, 15]
    assert ExprFamily._reduce([7, 3, 1, 1], ["*", "-", "+"]) == [21, 20, 21]
    assert ExprFamily._reduce([2, 3, 4], ["*", "*"]) == [6, 24]


def test_reverse_rejects_non_letters():
    family = get_family("reverse")
    assert family.verify("dcba", "dcba")
    assert not family.verify("dcb4", "dcb4")


def test_unknown_family_and_level_are_clear_errors():
    with pytest.raises(ValueError, match="unknown task family 'div'"):
        get_family("div")
    with pytest.raises(ValueError, match="add: unknown difficulty 4"):
        get_family("add").sample(random.Random(0), 4)


def test_space_size_counts_distinct_prompts():
    family = get_family("mul")
    assert family.space_size(1) == 8 * 90
    rng = random.Random(0)
    prompts = {family.sample(rng, 1).prompt for _ in range(20000)}
    assert len(prompts) == 720
