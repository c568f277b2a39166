"""Task user in the training mixes, the sampled batches, the generation budget and the extraction rate."""

import logging

import pytest
from tests.unit.data.tiny_records import records_tokenizer

from cascadelab.data.curriculum import CurriculumSampler, CurriculumState
from cascadelab.data.user_dataset import RegexVerifier
from cascadelab.data.user_task import answer_extraction_rate, skip_user, training_mix, user_generation_budget

META = {"user": {"weight": 0.25, "only": False, "generation_margin": 0.5}}


def test_user_joins_the_mix_at_its_share_and_the_others_keep_their_ratios() -> None:
    mix = training_mix({"add": 0.6, "sub": 0.2}, META)
    assert mix == pytest.approx({"add": 0.5625, "sub": 0.1875, "user": 0.25})
    assert training_mix({"add": 1.0}, {"user": {**META["user"], "only": True}}) == {"user": 1.0}
    assert training_mix({"add": 1.0, "user": 0.9}, META) == {"add": 1.0, "user": 0.9}  # named by the user: kept
    assert training_mix({"add": 1.0}, {}) == {"add": 1.0}  # no user data: unchanged


def test_the_user_task_appears_in_the_sampled_batches() -> None:
    tasks = ["add"] * 50 + ["user"] * 10
    mix = training_mix({"add": 1.0}, META)
    sampler = CurriculumSampler(tasks, mix, ["add"], 400, 0, CurriculumState(switch_step=0), batch_size=8)
    drawn = [tasks[i] for i in sampler]
    assert drawn[:32] == ["add"] * 32  # the warm-up, before the switch takes effect
    share = drawn.count("user") / len(drawn)
    assert 0.1 < share < 0.35


def test_the_generation_budget_follows_the_longest_user_response_with_its_margin() -> None:
    tokenizer = records_tokenizer()
    train = [
        {"task": "user", "response": "dcba"},
        {"task": "user", "response": "ab"},
        {"task": "add", "response": "+24"},
    ]
    assert user_generation_budget(tokenizer, train, META) == 8  # (4 + EOS) x 1.5, rounded up
    assert user_generation_budget(tokenizer, train[2:], META) == 0


def test_the_answer_after_the_last_marker_is_read_from_a_long_worked_solution() -> None:
    verifier = RegexVerifier(r"####\s*(-?[\d,\.]+)")
    output = "Zoë has 3 × 4 = 12.\nNot #### 7 yet…\nSo she makes €1,200.\n#### 1,200\n[EOS] trailing text"
    assert verifier.extract(output) == "1200" and verifier.verify(output, "1200")
    records = [{"task": "user"}, {"task": "user"}, {"task": "add"}]
    rates = answer_extraction_rate(records, [output, "no marker here", "+3"], verifier.extract)
    assert rates == {"user_answer_extraction_rate": 50.0}


def test_a_stage_that_skips_user_says_so_once(caplog: pytest.LogCaptureFixture) -> None:
    records = [{"task": "add"}, {"task": "user"}]
    with caplog.at_level(logging.WARNING, logger="cascadelab.user"):
        assert skip_user("unit_stage", records, "why") == [{"task": "add"}]
        assert skip_user("unit_stage", records, "why") == [{"task": "add"}]
    assert [r.getMessage() for r in caplog.records] == ["unit_stage: skips task user: why"]
