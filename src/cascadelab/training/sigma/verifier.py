"""Verifiers that turn SIGMA's sampled outputs into rewards in [0, 1], behind a two-step cascade.

- **Math** (`MathVerifier`): the corpus families' own extraction (`cascadelab.data`: the final answer
  after the last step separator, in the corpus answer format, or a user dataset's regex) and an exact
  comparison with the canonical answer. Reward = ``format_weight`` for a well-formed answer plus
  ``1 - format_weight`` when it is also correct.
- **Code** (`CodeVerifier`): the output is a Python expression (bound to ``candidate``) or a short
  program; the cheap check parses it and checks the spec's static constraints, the full check runs it in
  the code sandbox (`cascadelab.sandbox`) against the spec's test expressions. Reward = ``format_weight``
  for code that parses plus ``1 - format_weight`` times the share of tests passed (0 for a timeout,
  crash, memory or forbidden verdict).

**Verifier cascade**: every output gets the cheap check (format / parse); only outputs that pass it
reach the full check (exact compare, sandbox execution). Both are counted separately.

**Asymmetric verification**: the two kinds of claim are treated differently. A claimed success (an
output that passes the cheap check, i.e. offers an answer) earns the correctness reward only after full
verification; the cheap check alone never grants it. A cheap-check failure is final: it gets 0 and is
never escalated to the full check (a malformed answer cannot be right, so the expensive step is saved).
`asym_verify` counts the decisions settled by that rule without the full check.

The trainer reads the counters as ``feature_<name>_effective_calls`` through `VerifierCascade.counters`.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from cascadelab.data.corpus import CorpusVerifier, Verifier
from cascadelab.sandbox import Sandbox, Status, TestCase


class Check(Protocol):
    """A verifier with a cheap format check and a full (possibly expensive) check."""

    def cheap(self, output: str, reference: object) -> bool:
        """Whether `output` is well formed enough to be worth the full check."""
        ...

    def full(self, output: str, reference: object) -> float:
        """Correctness of a well-formed output in [0, 1]."""
        ...


@dataclass(frozen=True)
class Reward:
    """One output's reward and how it was reached."""

    value: float
    well_formed: bool
    escalated: bool
    correctness: float = 0.0


class MathVerifier:
    """Final-answer extraction and exact comparison, through a corpus verifier."""

    def __init__(self, verifier: Verifier) -> None:
        self.verifier = verifier

    @classmethod
    def for_task(cls, meta: Mapping[str, object], task: str) -> MathVerifier:
        """The verifier of corpus task `task`, given the corpus `meta.json`."""
        return cls(CorpusVerifier(dict(meta)).for_task(task))

    def cheap(self, output: str, reference: object) -> bool:
        """True when a final answer can be extracted."""
        return self.verifier.extract(output) is not None

    def full(self, output: str, reference: object) -> float:
        """1.0 when the extracted answer equals the canonical answer exactly."""
        return 1.0 if self.verifier.verify(output, str(reference)) else 0.0


@dataclass(frozen=True)
class CodeSpec:
    """What a code answer must satisfy: static constraints and test expressions."""

    tests: tuple[TestCase, ...]
    required_literals: frozenset[object] = field(default_factory=frozenset)
    max_chars: int = 400


_FENCE = re.compile(r"```(?:python|py)?\s*\n?(.*?)```", re.DOTALL)


def extract_code(output: str) -> str:
    """The code in `output`: the first fenced block if there is one, else the stripped text."""
    match = _FENCE.search(output)
    return (match.group(1) if match else output).strip()


def as_program(code: str) -> str | None:
    """A program for the sandbox: an expression is bound to `candidate`; None when `code` does not parse."""
    try:
        ast.parse(code, mode="eval")
        return f"candidate = (\n{code}\n)"
    except SyntaxError:
        pass
    try:
        ast.parse(code, mode="exec")
    except SyntaxError:
        return None
    return code


def _literals(code: str) -> set[object]:
    """Constants that appear in `code`."""
    return {node.value for node in ast.walk(ast.parse(code)) if isinstance(node, ast.Constant)}


class CodeVerifier:
    """Parses model-written code cheaply, then runs it in the sandbox against the spec's tests."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self.last_status: Status | None = None

    def cheap(self, output: str, reference: object) -> bool:
        """True when the code is short enough, parses and uses the required literals."""
        spec = _spec(reference)
        code = extract_code(output)
        if not code or len(code) > spec.max_chars:
            return False
        program = as_program(code)
        return program is not None and spec.required_literals <= _literals(program)

    def full(self, output: str, reference: object) -> float:
        """Share of tests passed in the sandbox (0 for timeout, memory, crash or forbidden)."""
        spec = _spec(reference)
        program = as_program(extract_code(output))
        if program is None:
            return 0.0
        verdict = self.sandbox.run(program, spec.tests)
        self.last_status = verdict.status
        if verdict.status not in (Status.OK, Status.WRONG) or not spec.tests:
            return 1.0 if verdict.status is Status.OK else 0.0
        return verdict.passed / len(spec.tests)


def _spec(reference: object) -> CodeSpec:
    if not isinstance(reference, CodeSpec):
        raise TypeError(f"code verifier: reference must be a CodeSpec, got {type(reference).__name__}")
    return reference


class VerifierCascade:
    """Cheap check first, full check only for outputs that pass; counts each step (see module doc)."""

    def __init__(self, checks: Mapping[str, Check], format_weight: float = 0.1, asymmetric: bool = True) -> None:
        if not 0.0 <= format_weight < 1.0:
            raise ValueError("verifier.format_weight: must be in [0, 1)")
        self.checks = dict(checks)
        self.format_weight = format_weight
        self.asymmetric = asymmetric  # False: a cheap-check failure is escalated too (the symmetric baseline)
        self.verifier_calls = 0  # outputs scored
        self.cheap_failures = 0
        self.full_checks = 0  # escalations to the full check (the cascade's second step)
        self.asym_decisions = 0  # cheap failures settled without escalation
        self.refuted_claims = 0  # well-formed outputs the full check found wrong

    def reward(self, kind: str, output: str, reference: object) -> Reward:
        """The reward of one output of task kind `kind` (a key of `checks`)."""
        try:
            check = self.checks[kind]
        except KeyError:
            raise ValueError(f"verifier: no check for kind {kind!r} (known: {', '.join(self.checks)})") from None
        self.verifier_calls += 1
        if not check.cheap(output, reference):
            self.cheap_failures += 1
            if self.asymmetric:
                self.asym_decisions += 1
                return Reward(0.0, well_formed=False, escalated=False)
            self.full_checks += 1
            correctness = min(max(check.full(output, reference), 0.0), 1.0)
            return Reward((1.0 - self.format_weight) * correctness, False, True, correctness)
        self.full_checks += 1
        correctness = min(max(check.full(output, reference), 0.0), 1.0)
        if correctness < 1.0:
            self.refuted_claims += 1
        value = self.format_weight + (1.0 - self.format_weight) * correctness
        return Reward(value, well_formed=True, escalated=True, correctness=correctness)

    def rewards(self, kind: str, outputs: Sequence[str], references: Sequence[object]) -> list[float]:
        """Rewards of a batch (the shape TRL's reward functions return)."""
        if len(outputs) != len(references):
            raise ValueError(f"verifier: {len(outputs)} outputs but {len(references)} references")
        return [self.reward(kind, output, ref).value for output, ref in zip(outputs, references, strict=True)]

    def counters(self) -> dict[str, int]:
        """The trainer's `feature_<name>_effective_calls` counters."""
        return {
            "feature_verifier_effective_calls": self.verifier_calls,
            "feature_verifier_cascade_effective_calls": self.full_checks,
            "feature_asym_verify_effective_calls": self.asym_decisions,
        }
