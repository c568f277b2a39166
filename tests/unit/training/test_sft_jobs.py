"""SFT jobs: parallel runs give the same weights as sequential ones; the control's budget matches the refiners'."""

import random

import pytest
import torch

from cascadelab.cascade.formatting import refiner_record
from cascadelab.config import CausalLMParams, RefinerSettings, RefinerTrainSettings, SFTTrainParams, TokenizerParams
from cascadelab.data.tasks import get_family
from cascadelab.data.tokenizer import train_tokenizer
from cascadelab.models.coarse import build_causal_lm
from cascadelab.training.refiner_trainer import clone_model, control_job, expected_tokens, refiner_jobs
from cascadelab.training.sft_jobs import SFTJob, run_jobs


def _records(task, count, seed=0):
    rng = random.Random(seed)
    family = get_family(task)
    out = []
    for i in range(count):
        item = family.sample(rng, 1)
        out.append(
            {
                "id": f"{task}{i}",
                "task": task,
                "difficulty": 1,
                "prompt": item.prompt,
                "response": item.response,
                "answer": item.answer,
                "steps": item.steps,
            }
        )
    return out


@pytest.fixture(scope="module")
def tokenizer():
    texts = [r[k] for t in ("add", "mul", "word") for r in _records(t, 30) for k in ("prompt", "response", "steps")]
    return train_tokenizer([*texts, "0123456789+-*=:,? abcdefghijklmnopqrstuvwxyz"], TokenizerParams())


@pytest.fixture(scope="module")
def model(tokenizer):
    torch.set_num_threads(1)
    torch.manual_seed(0)
    return build_causal_lm(
        CausalLMParams(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64).to_config(tokenizer)
    )


def _jobs(model):
    train = SFTTrainParams(max_steps=3, batch_size=4, warmup_steps=0, logging_steps=1, save_steps=0, num_threads=1)
    return [
        SFTJob(task, clone_model(model), _records(task, 16), train, {task: 1.0}, target_field="response")
        for task in ("add", "mul")
    ]


def test_parallel_jobs_train_the_same_weights_as_sequential_ones(model, tokenizer, tmp_path):
    sequential = run_jobs(_jobs(model), tokenizer, 0, tmp_path / "seq", parallel=False)
    parallel = run_jobs(_jobs(model), tokenizer, 0, tmp_path / "par", parallel=True)
    assert list(parallel) == ["add", "mul"]
    for key in ("add", "mul"):
        expected, got = sequential[key][0].state_dict(), parallel[key][0].state_dict()
        assert all(torch.equal(expected[name], got[name]) for name in expected)
        assert parallel[key][1].train_tokens == sequential[key][1].train_tokens > 0
        assert len(parallel[key][1].history) == 3
    untouched = build_causal_lm(
        CausalLMParams(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64).to_config(tokenizer)
    ).state_dict()
    assert not torch.equal(parallel["add"][0].state_dict()["lm_head.weight"], untouched["lm_head.weight"])


def test_duplicate_job_keys_are_refused(model, tokenizer, tmp_path):
    jobs = _jobs(model)
    with pytest.raises(ValueError, match="sft jobs: keys must be distinct"):
        run_jobs([jobs[0], jobs[0]], tokenizer, 0, tmp_path)


def test_control_budget_matches_the_refiners_tokens_or_steps(model, tokenizer):
    settings = RefinerSettings(
        mix={"mul": 0.5, "word": 0.4, "add": 0.1},
        route_tasks=["mul", "word"],
        per_family=True,
        family_steps={"mul": 30, "word": 20},
        train=RefinerTrainSettings(batch_size=8, num_threads=1, warmup_steps=0),
        control={"budget": "tokens"},
    )
    rows = [refiner_record(r, None, settings.format) for t in ("mul", "word", "add") for r in _records(t, 40)]
    refiners = refiner_jobs(model, rows, settings)
    assert [(j.key, j.train.max_steps, sorted(j.mix)) for j in refiners] == [
        ("mul", 30, ["add", "mul"]),
        ("word", 20, ["add", "word"]),
    ]
    train = [r for t in ("mul", "word", "add", "sub") for r in _records(t, 40, seed=1)]
    control = control_job(model, tokenizer, train, settings, refiners)
    assert control.key == "coarse_more" and control.target_field == "response"
    assert {r["task"] for r in control.rows} == {"mul", "word", "add"}  # the refiners' families, own format
    refiner_tokens = sum(expected_tokens(tokenizer, j) for j in refiners)
    assert expected_tokens(tokenizer, control) == pytest.approx(refiner_tokens, rel=0.02)
    assert control.train.max_steps > 50  # direct answers are shorter than worked steps: more steps
    by_steps = settings.model_copy(update={"control": settings.control.model_copy(update={"budget": "steps"})})
    assert control_job(model, tokenizer, train, by_steps, refiners).train.max_steps == 50
    narrowed = settings.model_copy(update={"family_support": {"mul": []}})
    assert [sorted(j.mix) for j in refiner_jobs(model, rows, narrowed)] == [["mul"], ["add", "word"]]


def test_family_support_names_non_routed_families_of_the_mix():
    with pytest.raises(ValueError, match=r"family_support\.word: not a routed family"):
        RefinerSettings(mix={"mul": 0.9, "word": 0.1}, route_tasks=["mul"], family_support={"word": []})
    with pytest.raises(ValueError, match=r"family_support\.mul: 'word' is not a non-routed family of the mix"):
        RefinerSettings(mix={"mul": 0.5, "word": 0.5}, route_tasks=["mul", "word"], family_support={"mul": ["word"]})
