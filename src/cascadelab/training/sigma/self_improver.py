"""Self-improver: new problems from the corpus templates, kept as training rows only when verified.

Each `round` draws ``problems_per_round`` new problems from the corpus task families
(:mod:`cascadelab.data.tasks`): the family templates with fresh operands, at any of the configured
levels, including levels the corpus did not use. A drawn prompt is dropped when its normalised form
(:func:`~cascadelab.data.corpus.normalise_prompt`) is in ``exclude`` (pass the val and test prompts so
that no held-out problem ever becomes training data; add the train prompts to force novelty) or was
produced by an earlier round. The model answers them (``generate(prompts) -> completions``) and a row
(prompt, completion, task) is kept only when ``verify(task, completion, reference_answer)`` confirms it:

    kept_r = {(p, c, t) : verify(t, c, answer(p))},     rejected_r = the rest

so the rows are the model's own verified solutions (rejection-sampling self-training). Family and level
of each problem come from a `random.Random` seeded by ``(seed, round)``: the same seed gives the same
problems. `kept` and `rejected` count rows over all rounds; `effective_calls` counts rounds that ran
the model.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from cascadelab.config import check_settings
from cascadelab.data.answers import AnswerFormat
from cascadelab.data.corpus import normalise_prompt
from cascadelab.data.tasks import FAMILIES, get_family

Generate = Callable[[list[str]], list[str]]
Verify = Callable[[str, str, object], bool]


@dataclass(frozen=True)
class SelfImproverSettings:
    """How many problems a round makes, from which families and levels, in which answer format."""

    problems_per_round: int = 16
    families: tuple[str, ...] = ("add", "sub", "mul", "expr", "reverse", "word")
    levels: tuple[int, ...] = (1, 2, 3)
    answer_format: AnswerFormat = "reversed"
    attempts_per_problem: int = 50  # draws allowed per wanted problem before a round gives up (small spaces)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.families) - set(FAMILIES))
        if not self.families or unknown:
            known = ", ".join(FAMILIES)
            raise ValueError(f"self_improver.families: unknown or empty {unknown}; known: {known}")
        check_settings(
            "self_improver",
            self,
            (
                ("problems_per_round", self.problems_per_round > 0, "> 0"),
                ("levels", bool(self.levels) and set(self.levels) <= {1, 2, 3}, "a non-empty subset of 1, 2, 3"),
                ("attempts_per_problem", self.attempts_per_problem > 0, "> 0"),
            ),
        )


class SelfImprover:
    """Makes new template problems, has the model solve them, keeps only the verified solutions."""

    def __init__(self, settings: SelfImproverSettings, seed: int, exclude: Iterable[str] = ()) -> None:
        self.settings = settings
        self.seed = seed
        self._families = {name: get_family(name, settings.answer_format) for name in settings.families}
        self._seen = {normalise_prompt(prompt) for prompt in exclude}
        self.rounds = 0
        self.kept = 0
        self.rejected = 0
        self.effective_calls = 0

    def problems(self) -> list[dict[str, Any]]:
        """The next round's new problems (task, difficulty, prompt, answer, response); none excluded or repeated."""
        s = self.settings
        rng = random.Random(f"{self.seed}:self_improver:{self.rounds}")
        out: list[dict[str, Any]] = []
        for _ in range(s.problems_per_round * s.attempts_per_problem):
            if len(out) == s.problems_per_round:
                break
            name = rng.choice(s.families)
            level = rng.choice(s.levels)
            item = self._families[name].sample(rng, level)
            key = normalise_prompt(item.prompt)
            if key in self._seen:
                continue
            self._seen.add(key)
            out.append(
                {
                    "task": name,
                    "difficulty": level,
                    "prompt": item.prompt,
                    "answer": item.answer,
                    "response": item.response,  # the template's gold target, kept beside the model's completion
                }
            )
        return out

    def round(self, generate: Generate, verify: Verify) -> list[dict[str, Any]]:
        """One round: new problems, the model's completions, the verified ones as LM training rows."""
        problems = self.problems()
        self.rounds += 1
        if not problems:
            return []
        completions = generate([p["prompt"] for p in problems])
        if len(completions) != len(problems):
            raise ValueError(
                f"self_improver: generate returned {len(completions)} completions for {len(problems)} prompts"
            )
        self.effective_calls += 1
        rows = []
        for problem, completion in zip(problems, completions, strict=True):
            if verify(problem["task"], completion, problem["answer"]):
                rows.append({**problem, "completion": completion, "source": "self_improver"})
            else:
                self.rejected += 1
        self.kept += len(rows)
        return rows
