"""Task families of the generated corpus, each with difficulty levels, worked steps and a verifier.

Every family samples items (`prompt`, `response`, `answer`, `steps`) from a `random.Random` and checks
model output with `verify`, which extracts the final answer (after the last `:` of worked steps, else
the whole output) and compares it with the canonical `answer` exactly. Malformed output never verifies.
"""

from __future__ import annotations

import random
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

from cascadelab.data.answers import AnswerFormat, final_segment, format_number, parse_number


@dataclass(frozen=True)
class Item:
    """One generated example before it gets an id and a split."""

    prompt: str
    response: str
    answer: str
    steps: str
    difficulty: int


class TaskFamily(ABC):
    """A family of verifiable items with difficulty levels 1..3."""

    name: str = ""
    levels: tuple[int, ...] = (1, 2, 3)

    def __init__(self, answer_format: AnswerFormat = "reversed") -> None:
        self.answer_format: AnswerFormat = answer_format

    @abstractmethod
    def sample(self, rng: random.Random, difficulty: int) -> Item:
        """Draw one item of the given difficulty."""

    @abstractmethod
    def space_size(self, difficulty: int) -> int:
        """How many distinct prompts exist at this difficulty (caps split sizes)."""

    def extract(self, output: str) -> str | None:
        """The canonical final answer in `output`, or None when it is malformed."""
        value = parse_number(final_segment(output), self.answer_format)
        return None if value is None else str(value)

    def verify(self, output: str, answer: str) -> bool:
        """True when `output`'s final answer equals `answer` exactly."""
        extracted = self.extract(output)
        return extracted is not None and extracted == answer

    def _check_level(self, difficulty: int) -> None:
        if difficulty not in self.levels:
            raise ValueError(f"{self.name}: unknown difficulty {difficulty} (levels: {self.levels})")

    def _number(self, value: int, width: int) -> str:
        return format_number(value, width, self.answer_format)


class TwoOperandFamily(TaskFamily):
    """`a<op>b=` with two operands drawn below 10**difficulty; subclasses give the operator."""

    symbol: ClassVar[str] = ""
    extra_digits: ClassVar[int] = 0  # the answer's padded width beyond `difficulty` digits

    @staticmethod
    @abstractmethod
    def apply(a: int, b: int) -> int:
        """The operator's value on the two operands."""

    def sample(self, rng: random.Random, difficulty: int) -> Item:
        """Draw `a<op>b=` with operands below 10**difficulty."""
        self._check_level(difficulty)
        top = 10**difficulty - 1
        a, b = rng.randint(0, top), rng.randint(0, top)
        value = self.apply(a, b)
        response = self._number(value, difficulty + self.extra_digits)
        return Item(f"{a}{self.symbol}{b}=", response, str(value), response, difficulty)

    def space_size(self, difficulty: int) -> int:
        """(10**d)**2 ordered pairs."""
        return (10**difficulty) ** 2


class AddFamily(TwoOperandFamily):
    """a+b with d-digit operands; one-step."""

    name = "add"
    symbol = "+"
    extra_digits = 1

    @staticmethod
    def apply(a: int, b: int) -> int:
        """a + b."""
        return a + b


class SubFamily(TwoOperandFamily):
    """a-b with d-digit operands (results may be negative); one-step."""

    name = "sub"
    symbol = "-"

    @staticmethod
    def apply(a: int, b: int) -> int:
        """a - b."""
        return a - b


class MulFamily(TaskFamily):
    """Multiplication: level 1 is 1-digit x 2-digit, 2 is 2x2, 3 is 3x2; steps are partial products."""

    name = "mul"
    _digits: ClassVar[dict[int, tuple[int, int]]] = {1: (1, 2), 2: (2, 2), 3: (3, 2)}

    def sample(self, rng: random.Random, difficulty: int) -> Item:
        """Draw `a*b=` with the level's operand digit counts."""
        self._check_level(difficulty)
        da, db = self._digits[difficulty]
        a = rng.randint(2 if da == 1 else 10 ** (da - 1), 10**da - 1)
        b = rng.randint(10 ** (db - 1), 10**db - 1)
        width = da + db
        response = self._number(a * b, width)
        return Item(f"{a}*{b}=", response, str(a * b), self._steps(a, b, width, response), difficulty)

    def _steps(self, a: int, b: int, width: int, response: str) -> str:
        # Partial products digit by digit of `a`, times each digit of `b` in place value order, then the
        # running sums; numbers reversed and zero-padded as the answer (STACK-NOTES "Worked-steps").
        a_digits = [int(c) * 10**i for i, c in enumerate(reversed(str(a)))]
        b_digits = [int(c) * 10**i for i, c in enumerate(reversed(str(b)))]
        partials = [x * y for y in b_digits for x in a_digits]
        sums, total = [], partials[0]
        for value in partials[1:-1]:
            total += value
            sums.append(total)
        numbers = [format_number(v, width, self.answer_format).lstrip("+") for v in partials + sums]
        return ",".join(numbers) + ":" + response

    def space_size(self, difficulty: int) -> int:
        """Count of operand pairs at this level."""
        da, db = self._digits[difficulty]
        low_a = 2 if da == 1 else 10 ** (da - 1)
        return (10**da - low_a) * (10**db - 10 ** (db - 1))


class ExprFamily(TaskFamily):
    """Expressions of 1-digit numbers with + - *; level L has L+1 operators; steps apply * first."""

    name = "expr"
    _widths: ClassVar[dict[int, int]] = {1: 3, 2: 4, 3: 5}

    def sample(self, rng: random.Random, difficulty: int) -> Item:
        """Draw an expression with difficulty+1 operators."""
        self._check_level(difficulty)
        numbers = [rng.randint(1, 9) for _ in range(difficulty + 2)]
        ops = [rng.choice("+-*") for _ in range(difficulty + 1)]
        prompt = "".join(f"{n}{o}" for n, o in zip(numbers, ops, strict=False)) + f"{numbers[-1]}="
        values = self._reduce(numbers, ops)
        width = self._widths[difficulty]
        response = self._number(values[-1], width)
        inner = [self._number(v, width) for v in values[:-1]]
        steps = ",".join(inner) + ":" + response if inner else response
        return Item(prompt, response, str(values[-1]), steps, difficulty)

    @staticmethod
    def _reduce(numbers: list[int], ops: list[str]) -> list[int]:
        """Intermediate values: each multiplication folded in, then each +/- left to right."""
        terms, signs, values = [numbers[0]], [], []
        for number, op in zip(numbers[1:], ops, strict=True):
            if op == "*":
                terms[-1] *= number
                values.append(terms[-1])
            else:
                terms.append(number)
                signs.append(op)
        total = terms[0]
        for term, sign in zip(terms[1:], signs, strict=True):
            total = total + term if sign == "+" else total - term
            values.append(total)
        if not values or values[-1] != total:
            values.append(total)
        return values

    def space_size(self, difficulty: int) -> int:
        """9**(L+2) operand choices times 3**(L+1) operator choices."""
        return 9 ** (difficulty + 2) * 3 ** (difficulty + 1)


class ReverseFamily(TaskFamily):
    """Reverse a lowercase string; level 1: 3-4 letters, 2: 5-6, 3: 7-8; one-step."""

    name = "reverse"
    _lengths: ClassVar[dict[int, tuple[int, int]]] = {1: (3, 4), 2: (5, 6), 3: (7, 8)}
    _letters = "abcdefghijklmnopqrstuvwxyz"
    _word = re.compile(r"^[a-z]+$")

    def sample(self, rng: random.Random, difficulty: int) -> Item:
        """Draw `rev <letters>=`."""
        self._check_level(difficulty)
        low, high = self._lengths[difficulty]
        word = "".join(rng.choice(self._letters) for _ in range(rng.randint(low, high)))
        return Item(f"rev {word}=", word[::-1], word[::-1], word[::-1], difficulty)

    def extract(self, output: str) -> str | None:
        """The reversed string, or None when it is not lowercase letters."""
        text = final_segment(output)
        return text if self._word.match(text) else None

    def space_size(self, difficulty: int) -> int:
        """26**n strings summed over the level's lengths."""
        low, high = self._lengths[difficulty]
        return sum(26**n for n in range(low, high + 1))


class WordFamily(TaskFamily):
    """Templated word problems: level 1 add/sub, 2 groups (mul), 3 two-step; steps state the equation."""

    name = "word"
    _names = ("Ann", "Bob", "Eve", "Tom", "Mia", "Sam", "Lea", "Max")
    _objects = ("apple", "pen", "card", "book", "coin", "cup")
    _width = 4

    def sample(self, rng: random.Random, difficulty: int) -> Item:
        """Draw a word problem and its equation."""
        self._check_level(difficulty)
        who, obj = rng.choice(self._names), rng.choice(self._objects)
        if difficulty == 1:
            a, b = rng.randint(10, 99), rng.randint(10, 99)
            if rng.random() < 0.5:
                prompt, equation, value = f"{who} has {a} {obj}s and gets {b} more. How many?=", f"{a}+{b}", a + b
            else:
                a, b = max(a, b), min(a, b)
                prompt, equation, value = f"{who} has {a} {obj}s and gives {b} away. How many?=", f"{a}-{b}", a - b
        elif difficulty == 2:
            a, b = rng.randint(2, 9), rng.randint(10, 99)
            prompt, equation, value = f"{who} buys {a} bags of {b} {obj}s. How many?=", f"{a}*{b}", a * b
        else:
            a, b, c = rng.randint(10, 99), rng.randint(2, 9), rng.randint(2, 9)
            prompt = f"{who} has {a} {obj}s and buys {b} bags of {c}. How many?="
            equation, value = f"{a}+{b}*{c}", a + b * c
        response = self._number(value, self._width)
        return Item(prompt, response, str(value), f"{equation}={response}:{response}", difficulty)

    def space_size(self, difficulty: int) -> int:
        """Distinct prompts: names x objects x number choices (x 2 templates at level 1)."""
        base = len(self._names) * len(self._objects)
        return base * {1: 2 * 90 * 90, 2: 8 * 90, 3: 90 * 8 * 8}[difficulty]


FAMILIES: dict[str, type[TaskFamily]] = {
    family.name: family for family in (AddFamily, SubFamily, MulFamily, ExprFamily, ReverseFamily, WordFamily)
}


def get_family(name: str, answer_format: AnswerFormat = "reversed") -> TaskFamily:
    """The task family called `name`."""
    try:
        return FAMILIES[name](answer_format)
    except KeyError:
        raise ValueError(f"unknown task family {name!r} (known: {', '.join(FAMILIES)})") from None
