"""Answer formats: how a number is written as a training target and read back from model output.

`reversed` (the default, measured best in STACK-NOTES): a sign on every answer, then the digits
least-significant first, zero-padded to a fixed width per family and difficulty: 38 at width 3 is
``+830``, -8 at width 2 is ``-80``. The model then emits the units digit first, the order in which
carries are computed. `plain` is the usual left-to-right decimal (``38``, ``-8``).
"""

from __future__ import annotations

import re
from typing import Literal

AnswerFormat = Literal["reversed", "plain"]

_REVERSED = re.compile(r"^([+-])(\d+)$")
_PLAIN = re.compile(r"^-?\d+$")
STEP_SEPARATOR = ":"


def format_number(value: int, width: int, style: AnswerFormat) -> str:
    """Write `value` as a target in the given answer format."""
    if style == "plain":
        return str(value)
    digits = str(abs(value))
    if len(digits) > width:
        raise ValueError(f"{value} does not fit an answer width of {width}")
    sign = "-" if value < 0 else "+"
    return sign + digits.zfill(width)[::-1]


def parse_number(text: str, style: AnswerFormat) -> int | None:
    """Read a number written by `format_number`; None when the text is malformed."""
    text = text.strip()
    if style == "plain":
        return int(text) if _PLAIN.match(text) else None
    match = _REVERSED.match(text)
    if match is None:
        return None
    value = int(match.group(2)[::-1])
    return -value if match.group(1) == "-" else value


def final_segment(text: str) -> str:
    """The final answer part of an output: after the last step separator, else the whole text."""
    return text.rsplit(STEP_SEPARATOR, 1)[-1].strip()
