"""Self-improver: keeps only verified solutions, deterministic per seed, never emits an excluded prompt."""

from __future__ import annotations

import pytest

from cascadelab.data.corpus import CorpusVerifier
from cascadelab.training.sigma.self_improver import SelfImprover, SelfImproverSettings

VERIFIER = CorpusVerifier({"answer_format": "reversed"})


def _half_right(improver: SelfImprover) -> tuple[list[str], list[str]]:
    """A generator answering even-numbered prompts with the gold target and odd ones with a wrong answer."""
    asked: list[str] = []
    gold = {}

    def generate(prompts: list[str]) -> list[str]:
        asked.extend(prompts)
        return [gold[p] if i % 2 == 0 else "+999" for i, p in enumerate(prompts)]

    problems = SelfImprover(improver.settings, improver.seed).problems()
    gold.update({p["prompt"]: p["response"] for p in problems})
    rows = improver.round(generate, VERIFIER.verify)
    return asked, [row["prompt"] for row in rows]


def test_only_verified_solutions_are_kept_and_counted() -> None:
    improver = SelfImprover(SelfImproverSettings(problems_per_round=12, families=("add", "mul")), seed=3)
    asked, kept = _half_right(improver)
    assert len(asked) == 12
    assert kept == asked[0::2]
    assert improver.kept == 6 and improver.rejected == 6 and improver.effective_calls == 1


def test_rows_are_training_rows_with_the_models_completion() -> None:
    improver = SelfImprover(SelfImproverSettings(problems_per_round=4, families=("reverse",)), seed=0)
    rows = improver.round(lambda prompts: [p[4:-1][::-1] for p in prompts], VERIFIER.verify)
    assert len(rows) == 4
    for row in rows:
        assert row["task"] == "reverse" and row["completion"] == row["answer"] == row["prompt"][4:-1][::-1]
        assert row["source"] == "self_improver"


def test_same_seed_same_problems_other_seed_other_problems() -> None:
    settings = SelfImproverSettings(problems_per_round=8)
    first = SelfImprover(settings, seed=7).problems()
    assert first == SelfImprover(settings, seed=7).problems()
    assert first != SelfImprover(settings, seed=8).problems()
    assert {p["task"] for p in first} <= set(settings.families)


def test_excluded_and_earlier_prompts_are_never_produced() -> None:
    everything = [f"{a}+{b}=" for a in range(10) for b in range(10)]  # the whole 1-digit addition space
    allowed = set(everything[::10])  # 10 prompts left
    excluded = [p.upper() if i % 2 else f" {p} " for i, p in enumerate(everything) if p not in allowed]
    settings = SelfImproverSettings(problems_per_round=6, families=("add",), levels=(1,))
    improver = SelfImprover(settings, seed=1, exclude=excluded)  # matched on the normalised prompt
    made: list[str] = []
    sizes = []
    for _ in range(5):
        rows = improver.round(lambda prompts: ["x"] * len(prompts), lambda *_: True)
        sizes.append(len(rows))
        made += [row["prompt"] for row in rows]
    assert sorted(made) == sorted(allowed)  # each allowed prompt once, then the space is exhausted
    assert sizes[0] == 6 and sizes[-1] == 0
    assert improver.effective_calls == sum(1 for size in sizes if size) and improver.kept == 10


def test_generate_must_answer_every_prompt_and_settings_are_checked() -> None:
    improver = SelfImprover(SelfImproverSettings(problems_per_round=2), seed=0)
    with pytest.raises(ValueError, match=r"generate returned 1 completions for 2 prompts"):
        improver.round(lambda prompts: ["+0"], VERIFIER.verify)
    with pytest.raises(ValueError, match=r"self_improver.families: unknown or empty \['nope'\]"):
        SelfImproverSettings(families=("add", "nope"))
    with pytest.raises(ValueError, match=r"self_improver\.levels: must be a non-empty subset of 1, 2, 3, got \(4,\)"):
        SelfImproverSettings(levels=(4,))
    with pytest.raises(ValueError, match=r"self_improver\.problems_per_round: must be > 0, got 0"):
        SelfImproverSettings(problems_per_round=0)
