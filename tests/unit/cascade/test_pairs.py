import random

import pytest
import torch

from cascadelab.cascade.pairs import (
    _balanced_counts,
    balance_pairs,
    coarse_candidates,
    cross_fit_pairs,
    fold_indices,
    pair_metrics,
    run_cascade_pairs,
    select_prompts,
)
from cascadelab.cascade.scoring import generated_tokens, score_outputs
from cascadelab.config import CrossFitSettings, PairsSettings
from cascadelab.data.tasks import get_family


def _records(task, level, count, seed=0):
    family = get_family(task)
    rng = random.Random(seed)
    out = {}
    while len(out) < count:
        item = family.sample(rng, level)
        out[item.prompt] = {
            "id": f"{task}-{len(out)}",
            "task": task,
            "difficulty": level,
            "prompt": item.prompt,
            "response": item.response,
            "answer": item.answer,
            "steps": item.steps,
        }
    return list(out.values())


def _pair(task, correct, index):
    return {"task": task, "coarse_correct": correct, "source": "greedy" if index % 2 else "sample", "n": index}


def test_balanced_counts():
    assert _balanced_counts(90, 10, 0.5) == (10, 10)
    assert _balanced_counts(10, 90, 0.5) == (10, 10)
    assert _balanced_counts(90, 10, 0.75) == (30, 10)
    assert _balanced_counts(5, 10, 0.0) == (0, 10)
    assert _balanced_counts(5, 10, 1.0) == (5, 0)


def test_balance_pairs_per_task_with_minimum_top_up():
    pairs = [_pair("add", True, i) for i in range(100)] + [_pair("mul", i < 6, i) for i in range(40)]
    balanced = balance_pairs(pairs, 0.5, min_per_task=20, seed=3)
    add = [p for p in balanced if p["task"] == "add"]
    mul = [p for p in balanced if p["task"] == "mul"]
    assert len(add) == 20 and all(p["coarse_correct"] for p in add)  # no wrong add answer: topped up
    assert len(mul) == 20 and sum(p["coarse_correct"] for p in mul) == 6  # 6 right + 6 wrong, topped up to 20
    assert balanced == [p for p in pairs if p in balanced]  # input order kept
    assert balance_pairs(pairs, 0.5, 20, seed=3) == balanced  # seeded
    assert balance_pairs(pairs, None) == pairs


def test_fold_indices_partition():
    folds = fold_indices(10, 3, seed=1)
    assert sorted(i for fold in folds for i in fold) == list(range(10))
    assert [len(f) for f in folds] == [4, 3, 3]
    with pytest.raises(ValueError, match=r"cross_fit\.folds: must be >= 2 to split"):
        fold_indices(10, 1, 0)


def test_select_prompts_caps_each_task_with_a_seeded_sample():
    records = _records("add", 1, 30) + _records("sub", 1, 5)
    chosen = select_prompts(records, PairsSettings(max_prompts_per_task=10), seed=2)
    assert [r["task"] for r in chosen].count("add") == 10 and [r["task"] for r in chosen].count("sub") == 5
    assert chosen == [r for r in records if r in chosen]
    assert chosen == select_prompts(records, PairsSettings(max_prompts_per_task=10), seed=2)
    assert select_prompts(records, PairsSettings(max_prompts_per_task=None, tasks=["sub"])) == records[30:]


def test_pair_metrics_exact():
    pairs = [
        {"task": "add", "coarse_correct": True, "source": "greedy"},
        {"task": "add", "coarse_correct": False, "source": "greedy"},
        {"task": "mul", "coarse_correct": False, "source": "greedy"},
        {"task": "mul", "coarse_correct": True, "source": "sample"},
    ]
    metrics = pair_metrics(pairs, "train")
    assert metrics["train_pairs"] == 4
    assert metrics["train_right_fraction"] == 0.5
    assert metrics["train_coarse_error"] == pytest.approx(200 / 3)
    assert metrics["train_coarse_error_add"] == 50.0
    assert metrics["train_coarse_error_mul"] == 100.0
    assert metrics["train_coarse_sample_error_mul"] == 0.0


def test_score_outputs_matches_manual_log_probs(tokenizer, tiny_model):
    prompts, outputs = ["12+34=", "7*38=", "rev abc="], ["+640", "", "cba"]
    scores = score_outputs(tiny_model, tokenizer, prompts, outputs, batch_size=2, hidden=True)
    for i, (prompt, output) in enumerate(zip(prompts, outputs, strict=True)):
        p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        o = tokenizer(output, add_special_tokens=False)["input_ids"] if output else []
        ids = torch.tensor([[*p, *o, tokenizer.eos_token_id]])
        with torch.no_grad():
            result = tiny_model(input_ids=ids, output_hidden_states=True)
        logprobs = torch.log_softmax(result.logits[0, :-1], -1)
        positions = range(len(p) - 1, ids.shape[1] - 1)
        expected = torch.stack([logprobs[j, ids[0, j + 1]] for j in positions]).mean()
        assert scores.mean_logprob[i].item() == pytest.approx(expected.item(), abs=1e-5)
        assert scores.num_tokens[i].item() == len(o) + 1
        pooled = result.hidden_states[-1][0, list(positions)].mean(0)
        assert torch.allclose(scores.pooled_hidden[i], pooled, atol=1e-5)
    assert generated_tokens(tokenizer, outputs, max_new_tokens=4) == [4, 1, 4]


def test_coarse_candidates_fields_dedupe_and_verification(tokenizer, tiny_model, verifier):
    records = _records("add", 1, 12)
    records[0] = {**records[0]}
    settings = PairsSettings(num_samples=3, temperature=1.5, max_new_tokens=5, batch_size=8)
    pairs = coarse_candidates(tiny_model, tokenizer, records, verifier, settings, seed=1)
    assert sum(p["source"] == "greedy" for p in pairs) == len(records)
    for record in records:
        mine = [p for p in pairs if p["record_id"] == record["id"]]
        assert 1 <= len(mine) <= 4
        assert len({p["coarse"] for p in mine}) == len(mine)  # deduplicated
    for pair in pairs:
        assert set(pair) >= {
            "prompt",
            "coarse",
            "steps",
            "answer",
            "response",
            "task",
            "difficulty",
            "coarse_correct",
            "coarse_logprob",
        }
        assert pair["coarse_correct"] == verifier.verify("add", pair["coarse"], pair["answer"])
        assert pair["coarse_logprob"] <= 0
    again = coarse_candidates(tiny_model, tokenizer, records, verifier, settings, seed=1)
    assert [p["coarse"] for p in again] == [p["coarse"] for p in pairs]  # seeded sampling


def test_cross_fit_answers_each_fold_with_a_model_trained_without_it(tokenizer, verifier, model_factory):
    records = _records("sub", 1, 9)
    seen = []

    def train_fold(train_records, fold):
        seen.append(({r["id"] for r in train_records}, fold))
        return model_factory(seed=fold)

    settings = PairsSettings(num_samples=0, max_new_tokens=4, cross_fit=CrossFitSettings(folds=3))
    pairs = cross_fit_pairs(tokenizer, records, verifier, settings, train_fold, seed=0)
    assert [fold for _, fold in seen] == [0, 1, 2]
    assert sorted(p["record_id"] for p in pairs) == sorted(r["id"] for r in records)
    for pair in pairs:
        trained_ids, _ = seen[pair["fold"]]
        assert pair["record_id"] not in trained_ids


def test_run_cascade_pairs_balances_train_only(tokenizer, tiny_model, verifier):
    splits = {"train": _records("add", 1, 10, seed=1), "val": _records("add", 1, 6, seed=2)}
    settings = PairsSettings(num_samples=1, max_new_tokens=4, right_fraction=0.5, min_pairs_per_task=0)
    outcome = run_cascade_pairs(tiny_model, tokenizer, splits, verifier, settings, seed=0)
    assert outcome.metrics["val_pairs"] == len(outcome.pairs["val"])  # val keeps its natural ratio
    assert outcome.metrics["train_balanced_pairs"] == len(outcome.pairs["train"])
    assert "train_coarse_error_add" in outcome.metrics
    with pytest.raises(ValueError, match=r"cross_fit\.folds: cross-fitting needs a train_fold_fn"):
        run_cascade_pairs(tiny_model, tokenizer, splits, verifier, PairsSettings(cross_fit={"folds": 2}), seed=0)
