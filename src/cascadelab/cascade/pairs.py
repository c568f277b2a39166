"""`cascade_pairs`: the frozen coarse model answers train/val prompts; each answer becomes a (coarse, gold) pair.

Answers are generated batched with the KV cache (`generate_batched`): one greedy answer plus
`num_samples` sampled ones at `temperature`, so pairs hold real errors even where the coarse model has
memorised its train set. Each pair records the prompt, the coarse output, the gold steps/response/answer,
the task and difficulty, whether the coarse answer verifies and the coarse model's mean token log-prob
of it. Right and wrong answers are then balanced per task (`right_fraction`).

Cross-fitting (`cross_fit.folds = k`): records are split into k folds with a seeded shuffle; for each
fold i a caller-supplied `train_fold_fn(records_without_fold_i, fold_index)` returns a coarse model
trained without fold i, which then answers fold i. The stage passes a function that runs its own
`train_sft` with the coarse recipe; tests pass any model factory.
"""

from __future__ import annotations

import random
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from cascadelab.cascade.scoring import score_outputs
from cascadelab.config import PairsSettings
from cascadelab.eval.generation import generate_batched

Record = dict[str, Any]
Pair = dict[str, Any]
TrainFoldFn = Callable[[list[Record], int], PreTrainedModel]


class TaskVerifier(Protocol):
    """Verification dispatched by task (`CorpusVerifier` satisfies it)."""

    def verify(self, task: str, output: str, answer: str) -> bool:
        """Whether `output` answers `answer` for a record of `task`."""
        ...


@dataclass
class PairsOutcome:
    """Pairs per split and the stage's metrics."""

    pairs: dict[str, list[Pair]] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)


def coarse_candidates(
    coarse_model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    records: Sequence[Record],
    verifier: TaskVerifier,
    settings: PairsSettings,
    seed: int = 0,
) -> list[Pair]:
    """Every greedy and sampled coarse answer for `records` as a pair (deduplicated if asked), unbalanced."""
    records = select_prompts(records, settings, seed)
    prompts = [r["prompt"] for r in records]
    answers: list[list[tuple[str, str]]] = [[] for _ in records]
    greedy = generate_batched(
        coarse_model, tokenizer, prompts, settings.max_new_tokens, settings.batch_size, desc="pairs greedy"
    )
    for index, outputs in enumerate(greedy):
        answers[index].append(("greedy", outputs[0]))
    if settings.num_samples:
        sampled = generate_batched(
            coarse_model,
            tokenizer,
            prompts,
            settings.max_new_tokens,
            max(1, settings.batch_size // settings.num_samples),
            do_sample=True,
            temperature=settings.temperature,
            num_return_sequences=settings.num_samples,
            seed=seed,
            desc="pairs sampled",
        )
        for index, outputs in enumerate(sampled):
            answers[index].extend(("sample", text) for text in outputs)
    pairs: list[Pair] = []
    for record, candidates in zip(records, answers, strict=True):
        seen: set[str] = set()
        for number, (source, coarse) in enumerate(candidates):
            if settings.dedupe and coarse in seen:
                continue
            seen.add(coarse)
            pairs.append(
                {
                    "id": f"{record.get('id', record['prompt'])}#{number}",
                    "record_id": record.get("id", ""),
                    "task": record["task"],
                    "difficulty": record.get("difficulty", 0),
                    "prompt": record["prompt"],
                    "coarse": coarse,
                    "source": source,
                    "response": record.get("response", record["answer"]),
                    "steps": record.get("steps") or record.get("response", record["answer"]),
                    "answer": record["answer"],
                    "coarse_correct": bool(verifier.verify(record["task"], coarse, record["answer"])),
                }
            )
    scores = score_outputs(
        coarse_model, tokenizer, [p["prompt"] for p in pairs], [p["coarse"] for p in pairs], settings.batch_size
    )
    for pair, logprob in zip(pairs, scores.mean_logprob.tolist(), strict=True):
        pair["coarse_logprob"] = float(logprob)
    return pairs


def select_prompts(records: Sequence[Record], settings: PairsSettings, seed: int = 0) -> list[Record]:
    """The records to answer: the settings' tasks, at most `max_prompts_per_task` each (seeded, order kept)."""
    by_task: dict[str, list[int]] = defaultdict(list)
    for index, record in enumerate(records):
        if settings.tasks is None or record["task"] in settings.tasks:
            by_task[record["task"]].append(index)
    keep: set[int] = set()
    limit = settings.max_prompts_per_task
    for task in sorted(by_task):
        indices = by_task[task]
        if limit is not None and len(indices) > limit:
            indices = random.Random(f"{seed}:prompts:{task}").sample(indices, limit)
        keep.update(indices)
    return [record for index, record in enumerate(records) if index in keep]


def balance_pairs(
    pairs: Sequence[Pair], right_fraction: float | None, min_per_task: int = 0, seed: int = 0
) -> list[Pair]:
    """Subsample the abundant class per task so right answers make `right_fraction` of the pairs.

    The scarcer class is kept whole; when that leaves a task with fewer than `min_per_task` pairs (a task
    the coarse model always gets right), the abundant class tops it up to that minimum. The result keeps
    the input order. `right_fraction` None returns the pairs unchanged.
    """
    if right_fraction is None:
        return list(pairs)
    rng = random.Random(f"{seed}:balance")
    by_task: dict[str, tuple[list[int], list[int]]] = defaultdict(lambda: ([], []))
    for index, pair in enumerate(pairs):
        by_task[pair["task"]][0 if pair["coarse_correct"] else 1].append(index)
    keep: set[int] = set()
    for task in sorted(by_task):
        right, wrong = by_task[task]
        want_right, want_wrong = _balanced_counts(len(right), len(wrong), right_fraction)
        shortfall = max(0, min(min_per_task, len(right) + len(wrong)) - want_right - want_wrong)
        if shortfall:
            extra_right = min(len(right) - want_right, shortfall)
            want_right += extra_right
            want_wrong += min(len(wrong) - want_wrong, shortfall - extra_right)
        keep.update(rng.sample(right, want_right))
        keep.update(rng.sample(wrong, want_wrong))
    return [pair for index, pair in enumerate(pairs) if index in keep]


def _balanced_counts(right: int, wrong: int, fraction: float) -> tuple[int, int]:
    """Largest (r, w) with r ≤ right, w ≤ wrong and r / (r + w) as close to `fraction` as counts allow."""
    if fraction <= 0:
        return 0, wrong
    if fraction >= 1:
        return right, 0
    if right * (1 - fraction) >= wrong * fraction:  # too many right answers: keep every wrong one
        return min(right, round(wrong * fraction / (1 - fraction))), wrong
    return right, min(wrong, round(right * (1 - fraction) / fraction))


def fold_indices(count: int, folds: int, seed: int) -> list[list[int]]:
    """`folds` disjoint, near-equal index lists covering range(count), from a seeded shuffle."""
    if folds < 2:
        raise ValueError(f"cross_fit.folds: must be >= 2 to split (got {folds})")
    if count < folds:
        raise ValueError(f"cross_fit.folds: {folds} folds but only {count} records")
    order = list(range(count))
    random.Random(f"{seed}:folds").shuffle(order)
    return [sorted(order[i::folds]) for i in range(folds)]


def cross_fit_pairs(
    tokenizer: PreTrainedTokenizerBase,
    records: Sequence[Record],
    verifier: TaskVerifier,
    settings: PairsSettings,
    train_fold_fn: TrainFoldFn,
    seed: int = 0,
) -> list[Pair]:
    """Unbalanced pairs where each fold is answered by a coarse model trained without it.

    `train_fold_fn` gets every record outside the fold; `max_prompts_per_task` caps the answered prompts per
    fold.
    """
    pairs: list[Pair] = []
    for number, fold in enumerate(fold_indices(len(records), settings.cross_fit.folds, seed)):
        inside = set(fold)
        model = train_fold_fn([r for i, r in enumerate(records) if i not in inside], number)
        fold_pairs = coarse_candidates(model, tokenizer, [records[i] for i in fold], verifier, settings, seed + number)
        for pair in fold_pairs:
            pair["fold"] = number
        pairs.extend(fold_pairs)
    return pairs


def pair_metrics(pairs: Sequence[Pair], prefix: str) -> dict[str, float]:
    """Counts, right share and per-task coarse error rates (greedy answers; %), keyed `<prefix>_...`."""
    metrics: dict[str, float] = {f"{prefix}_pairs": float(len(pairs))}
    if pairs:
        metrics[f"{prefix}_right_fraction"] = sum(p["coarse_correct"] for p in pairs) / len(pairs)
    greedy: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    sampled: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for pair in pairs:
        counts = greedy if pair["source"] == "greedy" else sampled
        for key in (pair["task"], "all"):
            counts[key][0] += int(not pair["coarse_correct"])
            counts[key][1] += 1
    for name, counts in (("error", greedy), ("sample_error", sampled)):
        for task, (wrong, total) in sorted(counts.items()):
            suffix = "" if task == "all" else f"_{task}"
            metrics[f"{prefix}_coarse_{name}{suffix}"] = 100.0 * wrong / total
    return metrics


def run_cascade_pairs(
    coarse_model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    splits: dict[str, list[Record]],
    verifier: TaskVerifier,
    settings: PairsSettings,
    seed: int,
    train_fold_fn: TrainFoldFn | None = None,
) -> PairsOutcome:
    """The stage's logic: pairs for each split in `splits` (e.g. train and val) and their metrics.

    Metrics are computed on the unbalanced candidates (the coarse model's natural error rates); the train
    split is then balanced, val only if `balance_val`. Cross-fitting, when on, answers the train split only
    (val was never trained on) and needs `train_fold_fn`.
    """
    if settings.cross_fit.folds and train_fold_fn is None:
        raise ValueError("cross_fit.folds: cross-fitting needs a train_fold_fn that trains a fold's coarse model")
    outcome = PairsOutcome()
    started = time.perf_counter()
    for split, records in splits.items():
        if split == "train" and settings.cross_fit.folds and train_fold_fn is not None:
            candidates = cross_fit_pairs(tokenizer, records, verifier, settings, train_fold_fn, seed)
        else:
            candidates = coarse_candidates(coarse_model, tokenizer, records, verifier, settings, seed)
        outcome.metrics.update(pair_metrics(candidates, split))
        if split == "train" or settings.balance_val:
            candidates = balance_pairs(candidates, settings.right_fraction, settings.min_pairs_per_task, seed)
        outcome.metrics[f"{split}_balanced_pairs"] = float(len(candidates))
        outcome.pairs[split] = candidates
    outcome.metrics["pairs_seconds"] = time.perf_counter() - started
    return outcome
