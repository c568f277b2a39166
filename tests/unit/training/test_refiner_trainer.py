import random

import pytest
import torch

from cascadelab.cascade.limen import CHEAP_FEATURES, Limen, LimenGate
from cascadelab.cascade.refiner import Refiner
from cascadelab.config import (
    CausalLMParams,
    LimenSettings,
    RefinerFormatSettings,
    RefinerSettings,
    RefinerTrainSettings,
    TokenizerParams,
)
from cascadelab.data.corpus import CorpusVerifier, normalise_prompt
from cascadelab.data.tasks import get_family
from cascadelab.data.tokenizer import train_tokenizer
from cascadelab.eval.generation import generate_batched
from cascadelab.models.coarse import build_causal_lm
from cascadelab.training.refiner_trainer import (
    DRAFT_TOKENS,
    coarse_drafts,
    fresh_records,
    refinement_reward,
    run_refiner,
    train_discriminator,
    train_equal_compute_control,
    train_self_improvement,
    training_rows,
)

TRAIN = RefinerTrainSettings(max_steps=4, batch_size=4, warmup_steps=0, logging_steps=1, num_threads=1)


@pytest.fixture(scope="module")
def tokenizer():
    rng = random.Random(0)
    texts = ["0123456789+-*=:,? abcdefghijklmnopqrstuvwxyzABEHLMST."]
    for task in ("add", "mul", "word"):
        for _ in range(20):
            item = get_family(task).sample(rng, 1)
            texts += [item.prompt, item.steps]
    # Without byte tokens: a random tiny model sampling at T=2 over 256 extra byte ids writes garbage that every
    # reward scores alike (zero advantage), and the GRPO test below needs rewards that differ.
    return train_tokenizer(texts, TokenizerParams(byte_fallback=False))


@pytest.fixture(scope="module")
def model(tokenizer):
    torch.set_num_threads(1)
    torch.manual_seed(0)
    params = CausalLMParams(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64)
    return build_causal_lm(params.to_config(tokenizer)).eval()


@pytest.fixture(scope="module")
def verifier():
    return CorpusVerifier({"answer_format": "reversed"})


def test_fresh_records_are_seeded_distinct_verified_and_exclude_eval_prompts():
    first = fresh_records({"mul": [1]}, 50, seed=3)
    assert first == fresh_records({"mul": [1]}, 50, seed=3)
    assert len({r["prompt"] for r in first}) == 50
    family = get_family("mul")
    assert all(family.verify(r["steps"], r["answer"]) for r in first)
    excluded = [r["prompt"] for r in first[:10]]
    second = fresh_records({"mul": [1]}, 50, seed=3, exclude_prompts=excluded)
    assert not {normalise_prompt(p) for p in excluded} & {normalise_prompt(r["prompt"]) for r in second}
    everything = fresh_records({"mul": [1]}, 10_000, seed=3, exclude_prompts=excluded)
    assert len(everything) == 720 - 10  # the whole 1-digit x 2-digit cell but the excluded prompts


def test_training_rows_for_each_data_source(model, tokenizer):
    pair = {
        "id": "p",
        "task": "mul",
        "difficulty": 1,
        "prompt": "7*38=",
        "coarse": "+000",
        "response": "+662",
        "answer": "266",
        "steps": "650,012:+662",
        "coarse_correct": False,
    }
    train = [{"task": "mul", "difficulty": 1}]
    fmt = RefinerFormatSettings(use_coarse=True)
    base = dict(mix={"mul": 1.0}, route_tasks=["mul"], fresh_per_cell=5, format=fmt)
    rows = training_rows(RefinerSettings(data="pairs", **base), [pair], train, [], seed=0)
    assert [r["prompt"] for r in rows] == ["7*38=[COARSE]+000[REFINE]"]
    both = training_rows(RefinerSettings(data="both", **base), [pair], train, [], 0, "reversed", model, tokenizer)
    assert len(both) == 6 and all(r["prompt"].startswith(r["source_prompt"] + "[COARSE]") for r in both)
    with pytest.raises(ValueError, match=r"format\.use_coarse: fresh items need the coarse model"):
        training_rows(RefinerSettings(data="fresh", **base), [], train, [], seed=0)
    answer = RefinerSettings(
        data="fresh",
        mix={"mul": 1.0},
        route_tasks=["mul"],
        fresh_per_cell=3,
        format=RefinerFormatSettings(target="answer", use_coarse=False),
    )
    rows = training_rows(answer, [], train, [], seed=0)
    assert all(r["target"].startswith("+") and ":" not in r["target"] for r in rows)


def _limen(model, tokenizer, verifier):
    names = [*CHEAP_FEATURES, "task_mul"]
    weight = torch.tensor([1.0 if n == "answer_chars" else 0.0 for n in names])
    gate = LimenGate(weight, torch.tensor(-4.5), torch.zeros(len(names)), torch.ones(len(names)))
    return Limen(model, tokenizer, verifier, LimenSettings(use_hidden=False, use_task=True), ["mul"], gate, 0.5)


def test_refinement_reward_exact(model, tokenizer, verifier):
    settings = RefinerSettings(
        mix={"mul": 1.0}, route_tasks=["mul"], self_improvement={"tension_weight": 0.5, "format_weight": 0.1}
    )
    reward = refinement_reward(verifier, settings, _limen(model, tokenizer, verifier))
    values = reward(
        prompts=["x", "x", "x"],
        completions=["650,012:+662", "650,012:+000", "junk"],
        task=["mul"] * 3,
        answer=["266"] * 3,
        coarse_correct=[0.0, 1.0, 0.0],
        source_prompt=["7*38="] * 3,
    )
    tension = 1 / (1 + 2.718281828459045**0.5)  # σ(4 − 4.5) for a 4-character answer
    assert values[0] == pytest.approx(1 + 0.1 - 0.5 * tension, abs=1e-6)  # fixed a wrong coarse answer
    assert values[1] == pytest.approx(-1 + 0.1 - 0.5 * tension, abs=1e-6)  # broke a right one
    assert values[2] == pytest.approx(0 + 0.1 - 0.5 * 1.0, abs=1e-6)  # malformed answer: tension 1


def test_discriminator_learns_gold_from_garbage(tokenizer):
    gold = [get_family("mul").sample(random.Random(i), 1).steps for i in range(40)]
    garbage = ["+" + "7" * (i % 5 + 1) for i in range(40)]
    disc, losses = train_discriminator(tokenizer, gold, garbage, hidden=16, steps=60, learning_rate=1e-2, seed=0)
    assert losses[-1] < 0.5 * losses[0]
    assert min(disc.gold_probability(tokenizer, gold[:5])) > max(disc.gold_probability(tokenizer, garbage[:5]))


def test_equal_compute_control_trains_a_copy(model, tokenizer, tmp_path):
    records = [
        {"task": "add", "prompt": f"{a}+{b}=", "response": f"+{a + b:02d}"[::-1]} for a in range(5) for b in range(5)
    ]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    control, result = train_equal_compute_control(model, tokenizer, records, 3, TRAIN, {"add": 1.0}, 0, tmp_path)
    assert result.history[-1]["step"] == 3
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert any(not torch.equal(v, control.state_dict()[k]) for k, v in before.items())


def test_run_refiner_adversarial_then_a_grpo_self_improvement_step(model, tokenizer, verifier, tmp_path):
    rl = {
        "max_steps": 1,
        "batch_size": 8,
        "num_generations": 4,
        "learning_rate": 1e-2,
        "logging_steps": 1,
        "max_prompts": 8,
        "temperature": 2.0,
    }
    settings = RefinerSettings(
        mix={"mul": 1.0},
        route_tasks=["mul"],
        fresh_per_cell=40,
        train=TRAIN,
        max_new_tokens=8,
        strategy="adversarial",
        self_improvement=rl,
        adversarial={"disc_steps": 5, "disc_hidden": 8},
        control={"enabled": False},  # the train records here hold levels only
    )
    val = fresh_records({"mul": [1]}, 6, seed=9)
    limen = _limen(model, tokenizer, verifier)
    outcome = run_refiner(
        model,
        tokenizer,
        verifier,
        settings,
        0,
        tmp_path,
        [],
        [{"task": "mul", "difficulty": 1}],
        val,
        limen=limen,
        val_records=val,
    )
    m = outcome.metrics
    assert m["train_rows"] == 40 and m["train_steps"] == 4 and m["refiner_bytes"] > 0
    assert m["discriminator_final_loss"] > 0 and m["rl_seconds"] > 0
    assert 0.0 <= m["val_refined_em"] <= 100.0 and "val_refined_em_mul" in m
    refiner: Refiner = outcome.refiner
    before = {k: v.clone() for k, v in refiner.models["all"].state_dict().items()}
    rows = training_rows(settings, [], [{"task": "mul", "difficulty": 1}], [], 1, "reversed", model, tokenizer)[:8]
    history = train_self_improvement(refiner, rows, verifier, 0, tmp_path / "rl", limen)
    assert any("reward" in row for row in history)
    after = refiner.models["all"].state_dict()
    assert any(not torch.equal(v, after[k]) for k, v in before.items())


def test_drafts_are_the_coarse_models_greedy_answers_or_a_seeded_share_of_samples(model, tokenizer):
    prompts = ["7*38=", "12*3=", "5*61=", "9*9=", "14*2=", "6*7="]
    greedy = [o[0] for o in generate_batched(model, tokenizer, prompts, DRAFT_TOKENS)]
    none = RefinerSettings(mix={"mul": 1.0}, route_tasks=["mul"], format={"sampled_drafts": 0.0})
    assert coarse_drafts(model, tokenizer, prompts, none, seed=3) == greedy
    every = none.model_copy(update={"format": none.format.model_copy(update={"sampled_drafts": 1.0})})
    sampled = coarse_drafts(model, tokenizer, prompts, every, seed=3)
    assert sampled == coarse_drafts(model, tokenizer, prompts, every, seed=3)  # seeded
    assert sampled != greedy  # an untrained model at T 1.2 does not repeat its greedy answers
