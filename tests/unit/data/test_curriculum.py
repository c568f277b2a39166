import pytest

from cascadelab.data.curriculum import SWITCH_LAG, CurriculumSampler, CurriculumState, LoopCurriculum

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


def loop_curriculum(max_warmup_steps=100):
    return LoopCurriculum(
        TASKS,
        {"add": 1, "sub": 1, "mul": 2},
        ["add", "sub"],
        switch_loss=0.1,
        max_warmup_steps=max_warmup_steps,
        max_steps=40,
        batch_size=4,
        seed=0,
    )


def test_loop_curriculum_switches_on_a_low_window_loss_only():
    curriculum = loop_curriculum()
    for step in range(1, 6):
        batch = curriculum.next_batch()
        assert len(batch) == 4 and {TASKS[i] for i in batch} <= {"add", "sub"}
        curriculum.observe(step, None if step < 5 else 0.5)  # no window ended, then a high loss
    assert curriculum.state.switch_step is None and not curriculum.mixing_at(6)
    curriculum.next_batch()
    curriculum.observe(6, 0.05)
    assert curriculum.state.switch_step == 6
    assert not curriculum.mixing_at(6 + SWITCH_LAG) and curriculum.mixing_at(7 + SWITCH_LAG)
    tasks = [{TASKS[i] for i in curriculum.next_batch()} for _ in range(30)]
    assert all(len(t) == 1 for t in tasks) and {"mul"} in tasks[SWITCH_LAG:]


def test_loop_curriculum_switches_at_the_warmup_cap():
    curriculum = loop_curriculum(max_warmup_steps=3)
    for step in range(1, 4):
        curriculum.next_batch()
        curriculum.observe(step, 5.0)
    assert curriculum.state.switch_step == 3
