import pytest

from cascadelab.training.curriculum import SWITCH_LAG, CurriculumSampler, CurriculumState

TASKS = ["add"] * 10 + ["sub"] * 10 + ["mul"] * 10


def draw(state, batches=20, group=True):
    sampler = CurriculumSampler(TASKS, {"add": 1, "sub": 1, "mul": 2}, ["add", "sub"], batches * 4, 0, state, 4, group)
    indices = list(sampler)
    return [[TASKS[i] for i in indices[b * 4 : (b + 1) * 4]] for b in range(batches)]


def test_warmup_draws_only_warmup_tasks_and_batches_are_single_task():
    batches = draw(CurriculumState())
    assert all(len(set(batch)) == 1 for batch in batches)
    assert {batch[0] for batch in batches} <= {"add", "sub"}


def test_switch_takes_effect_at_a_fixed_batch():
    batches = draw(CurriculumState(switch_step=5))
    assert {b[0] for b in batches[: 5 + SWITCH_LAG]} <= {"add", "sub"}
    assert "mul" in {b[0] for b in batches[5 + SWITCH_LAG :]}


def test_same_seed_same_order_and_ungrouped_mixes_within_batches():
    assert draw(CurriculumState(switch_step=3)) == draw(CurriculumState(switch_step=3))
    mixed = draw(CurriculumState(switch_step=-SWITCH_LAG), group=False)
    assert any(len(set(batch)) > 1 for batch in mixed)


def test_late_decision_is_refused():
    state = CurriculumState()
    state.batches_drawn = 10
    with pytest.raises(RuntimeError, match="raise SWITCH_LAG"):
        state.decide(2)


def test_unknown_mix_task_is_a_params_error():
    with pytest.raises(ValueError, match=r"mix\.div: no training rows"):
        CurriculumSampler(TASKS, {"div": 1}, [], 8, 0, CurriculumState(), 4)
