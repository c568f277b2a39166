"""SIGMA verifiers: math and code rewards, the cascade and asymmetric verification counters."""

from __future__ import annotations

import random

import pytest

from cascadelab.data.answers import format_number
from cascadelab.data.tasks import Item, get_family
from cascadelab.data.user_dataset import RegexVerifier
from cascadelab.sandbox import Limits, Sandbox, Status, TestCase
from cascadelab.training.sigma.verifier import (
    CodeSpec,
    CodeVerifier,
    MathVerifier,
    VerifierCascade,
    as_program,
    extract_code,
)

META = {"answer_format": "reversed"}
DOUBLE = CodeSpec((TestCase("candidate(3)", 6), TestCase("candidate(-2)", -4), TestCase("candidate(0)", 0)))
SIX_SEVEN = CodeSpec((TestCase("candidate", 42),), required_literals=frozenset({6, 7}))


@pytest.fixture(scope="module")
def sandbox() -> Sandbox:
    box = Sandbox(Limits(wall_seconds=5.0, cpu_seconds=2))
    box.warm_up()
    return box


@pytest.fixture
def cascade(sandbox: Sandbox) -> VerifierCascade:
    checks = {"mul": MathVerifier.for_task(META, "mul"), "code": CodeVerifier(sandbox)}
    return VerifierCascade(checks, format_weight=0.1)


def _item(task: str, difficulty: int = 1, seed: int = 0) -> Item:
    return get_family(task, "reversed").sample(random.Random(seed), difficulty)


def test_math_right_wrong_and_malformed(cascade: VerifierCascade) -> None:
    item = _item("mul")
    right = cascade.reward("mul", item.response, item.answer)
    with_steps = cascade.reward("mul", item.steps, item.answer)
    wrong_value = int(item.answer) + 1
    wrong = cascade.reward("mul", format_number(wrong_value, 4, "reversed"), item.answer)
    malformed = cascade.reward("mul", "banana", item.answer)
    assert right.value == pytest.approx(1.0) and right.correctness == 1.0
    assert with_steps.value == pytest.approx(1.0)
    assert wrong.value == pytest.approx(0.1) and wrong.well_formed and wrong.escalated
    assert malformed.value == 0.0 and not malformed.well_formed and not malformed.escalated


def test_user_regex_answers_go_through_the_same_verifier() -> None:
    cascade = VerifierCascade({"user": MathVerifier(RegexVerifier(r"####\s*(-?\d+)"))}, format_weight=0.2)
    assert cascade.reward("user", "3 + 15 = 18 #### 18", "18").value == pytest.approx(1.0)
    assert cascade.reward("user", "#### 17", "18").value == pytest.approx(0.2)
    assert cascade.reward("user", "eighteen", "18").value == 0.0


class _CountingCheck:
    def __init__(self) -> None:
        self.cheap_calls = 0
        self.full_calls = 0

    def cheap(self, output: str, reference: object) -> bool:
        self.cheap_calls += 1
        return output.startswith("answer:")

    def full(self, output: str, reference: object) -> float:
        self.full_calls += 1
        return 1.0 if output == f"answer:{reference}" else 0.0


def test_cascade_runs_the_full_check_only_after_the_cheap_one_passes() -> None:
    check = _CountingCheck()
    cascade = VerifierCascade({"toy": check}, format_weight=0.0)
    outputs = ["answer:1", "answer:2", "garbage", "", "answer:x", "nope"]
    rewards = cascade.rewards("toy", outputs, ["1"] * len(outputs))
    assert rewards == [1.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    assert (check.cheap_calls, check.full_calls) == (6, 3)
    assert cascade.counters() == {
        "feature_verifier_effective_calls": 6,
        "feature_verifier_cascade_effective_calls": 3,
        "feature_asym_verify_effective_calls": 3,
    }
    assert cascade.refuted_claims == 2


def test_code_right_partial_and_unparsable(cascade: VerifierCascade, sandbox: Sandbox) -> None:
    runs_before = sum(sandbox.counts.values())
    right = cascade.reward("code", "lambda x: 2 * x", DOUBLE)
    partial = cascade.reward("code", "lambda x: x * x if x > 0 else 2 * x", DOUBLE)
    unparsable = cascade.reward("code", "lambda x: 2 *", DOUBLE)
    assert right.value == pytest.approx(1.0)
    assert partial.value == pytest.approx(0.1 + 0.9 * 2 / 3)
    assert unparsable.value == 0.0 and not unparsable.escalated
    assert sum(sandbox.counts.values()) - runs_before == 2  # the unparsable output never reached the sandbox


def test_code_static_constraints_are_a_cheap_check(cascade: VerifierCascade) -> None:
    assert cascade.reward("code", "6 * 7", SIX_SEVEN).value == pytest.approx(1.0)
    assert not cascade.reward("code", "42", SIX_SEVEN).escalated
    assert cascade.reward("code", "6 * 7 + 1", SIX_SEVEN).value == pytest.approx(0.1)


def test_hostile_code_earns_only_the_format_reward(cascade: VerifierCascade) -> None:
    code_check = cascade.checks["code"]
    assert isinstance(code_check, CodeVerifier)
    reward = cascade.reward("code", "```python\nimport os\ncandidate = lambda x: os.fork()\n```", DOUBLE)
    assert reward.value == pytest.approx(0.1) and reward.correctness == 0.0
    assert code_check.last_status is Status.FORBIDDEN


def test_code_extraction_and_program_forms() -> None:
    assert (
        extract_code("Here:\n```python\ndef candidate(x):\n    return x\n```\nDone")
        == "def candidate(x):\n    return x"
    )
    assert extract_code("  lambda x: x  ") == "lambda x: x"
    assert as_program("lambda x: x") == "candidate = (\nlambda x: x\n)"
    assert as_program("def candidate(x):\n    return x") == "def candidate(x):\n    return x"
    assert as_program("def (") is None


def test_unknown_kind_and_bad_weight_are_one_line_errors(cascade: VerifierCascade) -> None:
    with pytest.raises(ValueError, match="no check for kind 'poem'"):
        cascade.reward("poem", "x", "y")
    with pytest.raises(ValueError, match=r"format_weight: must be in \[0, 1\)"):
        VerifierCascade({}, format_weight=1.0)
