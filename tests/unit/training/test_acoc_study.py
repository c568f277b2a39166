"""The growth study's engine and arms on a tiny memorisation task: budget, batches, growth, determinism."""

import dataclasses
import random

import pytest
import torch

from cascadelab.config import ACOCParams, TokenizerParams, VoteParams
from cascadelab.data.task_streams import build_task_batches
from cascadelab.data.tokenizer import train_tokenizer
from cascadelab.training.acoc.variants import vote_and_merge
from cascadelab.training.acoc_arms import StudyData, ablated, arm_settings, budget_flops, run_arm
from cascadelab.training.acoc_budget import BudgetEngine, BudgetPlan, study_schedule
from cascadelab.training.acoc_trainer import build_model

LETTERS = "abcdefgh"


def _records(task: str, seed: int) -> list[dict]:
    rng = random.Random(seed)
    return [
        {"id": f"{task}-{a}{b}", "task": task, "prompt": f"{a}{b}=", "response": v, "answer": v}
        for a in LETTERS
        for b in LETTERS
        for v in [rng.choice(LETTERS) + rng.choice(LETTERS)]
    ]


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one thread is fastest, as in the stage
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data():
    records = _records("map", 0) + _records("alt", 1)
    tokenizer = train_tokenizer([r["prompt"] + r["response"] for r in records], TokenizerParams(kind="char"))
    train = build_task_batches(records, tokenizer, ["map", "alt"], batch_size=8)
    val = {k: v.fixed(32) for k, v in build_task_batches(records, tokenizer, ["map", "alt"], 32).items()}
    test = {"map": records[:8], "alt": records[64:72]}
    return StudyData(tokenizer, train, val, test, lambda task, out, answer: out.strip() == answer)


def _params(**study) -> ACOCParams:
    return ACOCParams(
        tasks={"map": 0, "alt": 0},
        batch_size=8,
        learning_rate=3e-3,
        lr_warmup_steps=5,
        steps_per_cycle=20,
        num_threads=1,
        test_items_per_task=8,
        max_new_tokens=3,
        seeds=[0],
        model={"hidden_size": 16, "num_layers": 1, "num_heads": 2, "initial_experts": 1, "expert_width": 8},
        vote={"variants": 2},
        saturation={"batches": 1},
        study={"budget_large_steps": 30, "eval_every": 10, "nominal_seq_len": 4, "workers": 1, **study},
    )


def _engine(arm: str, params: ACOCParams, data: StudyData, seed: int = 0) -> BudgetEngine:
    budget = budget_flops(params, data.tokenizer)
    plan = BudgetPlan(budget, study_schedule(list(params.tasks), seed, 400), params.study.eval_every, 5)
    settings = arm_settings(params, arm, plan)
    return BudgetEngine(
        arm, build_model(settings.model, data.tokenizer, seed), settings, data.train, data.val, seed, plan
    )


def _recording(engine: BudgetEngine, seen: list[torch.Tensor]) -> None:
    original = engine.compute_loss

    def compute_loss(model, item):
        seen.append(item[1].input_ids.clone())
        return original(model, item)

    engine.compute_loss = compute_loss  # type: ignore[method-assign]


def test_arms_of_a_seed_see_identical_batches_step_by_step(data):
    params = _params()
    small, large = _engine("S", params, data), _engine("L", params, data)
    seen_small: list[torch.Tensor] = []
    seen_large: list[torch.Tensor] = []
    _recording(small, seen_small)
    _recording(large, seen_large)
    small.train_until(small.plan.budget_flops)
    large.train_until(large.plan.budget_flops)
    assert len(seen_small) > len(seen_large) > 0  # the small model takes more steps on the same FLOPs
    assert all(torch.equal(a, b) for a, b in zip(seen_small, seen_large, strict=False))
    other = _engine("S", params, data, seed=1)
    seen_other: list[torch.Tensor] = []
    _recording(other, seen_other)
    other.train_until(other.plan.budget_flops / 4)
    assert not all(torch.equal(a, b) for a, b in zip(seen_small, seen_other, strict=False))


def test_an_engine_stops_at_its_flop_mark_with_a_curve_point_every_eval_every_steps(data):
    engine = _engine("L", _params(), data)
    engine.record()
    engine.train_until(engine.plan.budget_flops)
    assert engine.spent and engine.flops - engine.plan.budget_flops < engine.flops / engine.step
    steps = [row["step"] for row in engine.curve]
    assert steps[0] == 0 and steps[-1] == engine.step
    assert all(s % 10 == 0 for s in steps[:-1]) and steps == sorted(set(steps))
    assert engine.lr_at(engine.step) == 0.0  # decayed to 0 at the end of the budget


def test_growth_splits_every_expert_preserving_the_loss_and_copying_adam_moments(data):
    engine = _engine("G", _params(), data)
    engine.train_until(0.3 * engine.plan.budget_flops)
    event = engine.grow(1e-3, torch.Generator().manual_seed(0))
    assert engine.model.config.experts_per_layer == [2]
    assert abs(event["relative_change"]) < 1e-5  # dense mixing: the split preserves the function
    moe = engine.model.moe_layers[0]
    for source, clone in zip(moe.expert(0).parameters(), moe.expert(1).parameters(), strict=True):
        assert torch.equal(engine.optimizer.state[source]["exp_avg_sq"], engine.optimizer.state[clone]["exp_avg_sq"])
    assert engine.lr_at(engine.step) < engine.lr_at(engine.step + 5)  # a short re-warm-up after the growth
    engine.train_until(engine.plan.budget_flops)
    assert engine.spent


def test_an_arm_run_depends_only_on_arm_and_seed(data):
    params = _params()
    first, second = run_arm("G", 0, params, data), run_arm("G", 0, params, data)
    assert first.curve == second.curve and first.items == second.items
    assert [e["type"] for e in first.events] == ["split_all", "split_all"]
    assert first.metrics["experts_final"] == 4 and len(first.items) == 16
    assert first.metrics["train_flops"] >= first.metrics["budget_flops"]


def test_the_adaptive_arm_spends_the_same_budget_and_counts_its_signals(data):
    run = run_arm("A", 0, _params(), data)
    assert run.metrics["train_flops"] >= run.metrics["budget_flops"]
    assert {"signal_stagnation", "signal_saturation", "signal_vote", "cycles"} <= set(run.metrics)
    assert sum(e["type"] == "decision" for e in run.events) == run.metrics["cycles"]


def test_growth_fractions_must_reach_the_large_size():
    with pytest.raises(ValueError, match="growth_fractions: 1 doublings cannot reach large_experts 4"):
        _params(growth_fractions=[0.3])
    with pytest.raises(ValueError, match=r"growth_fractions: must increase strictly inside \(0, 1\)"):
        _params(growth_fractions=[0.4, 0.2])


def test_each_ablation_switches_off_exactly_its_extra_on_a():
    params = _params(ablations=["penalty", "soup"])
    assert ablated(params, "A-penalty").penalty.alpha == ablated(params, "A-penalty").penalty.beta == 0.0
    assert ablated(params, "A-penalty").vote.soup and not ablated(params, "A-soup").vote.soup
    assert ablated(params, "A-forced_routing").warmup.force_share == 0.0
    assert ablated(params, "A-new_lr").warmup.lr_multiplier == 1.0
    assert (
        ablated(params, "A-ewc").continual.ewc_lambda == 0.0
        and ablated(params, "A-replay").continual.replay_weight == 0
    )
    assert ablated(params, "G") is params
    with pytest.raises(ValueError, match="ablations: switch extras off on A, which is not among the arms"):
        _params(ablations=["soup"], arms=["S", "L", "G"])


def test_without_the_soup_the_vote_leaves_the_weights_as_they_were(data):
    model = build_model(_params().model, data.tokenizer, 0)
    before = [p.detach().clone() for p in model.parameters()]
    result = vote_and_merge(
        model, lambda m: 1.0 + 0.001 * float(next(m.parameters()).sum()), [1.0], VoteParams(soup=False)
    )
    assert len(result.scores) == 5 and not result.merged
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_with_decay_after_growth_the_rate_falls_from_each_split_to_the_end_of_the_budget(data):
    params = _params(decay_after_growth=True, rewarmup_steps=1)
    engine = _engine("G", params, data)
    engine.plan = dataclasses.replace(engine.plan, decay_after_growth=True, rewarmup_steps=1)
    engine.train_until(0.3 * engine.plan.budget_flops)
    engine.grow(1e-3, torch.Generator().manual_seed(0))
    at_growth = engine.lr_at(engine.step + 1)
    assert at_growth == pytest.approx(params.learning_rate)  # back at the peak after a one-step re-warm-up
    engine.train_until(0.65 * engine.plan.budget_flops)  # about half way from the split to the end
    budget, split = engine.plan.budget_flops, engine.growth_flops[-1]
    share_left = (budget - engine.flops) / (budget - split)
    assert 0.4 < share_left < 0.6 and engine.lr_at(engine.step + 1) == pytest.approx(params.learning_rate * share_left)
