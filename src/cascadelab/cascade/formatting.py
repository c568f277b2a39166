"""Refiner text formats: `{prompt}[COARSE]{coarse}[REFINE]` inputs, step targets and their parsing.

Worked steps (the corpus `steps` field) are comma-separated small operations, then the step separator
`:` and the final answer in the family's answer format, e.g. `630,003:+633` for `6*56=`. The final answer
is whatever follows the LAST separator, the rule every family verifier applies (`answers.final_segment`).
Options (`RefinerFormatSettings`): the target (`steps`, or `answer` for the re-emission baseline), whether
the coarse output fills its slot (`use_coarse`; false leaves it empty, which is also the `skip_coarse`
input), and whether the prompt is repeated after `[REFINE]`. The step format itself is the corpus's
(`prepare` owns it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cascadelab.config import RefinerFormatSettings
from cascadelab.data.answers import STEP_SEPARATOR
from cascadelab.data.tokenizer import COARSE, REFINE

STEP_DELIMITER = ","


@dataclass(frozen=True)
class ParsedSteps:
    """A refiner output split into its steps and final answer."""

    steps: tuple[str, ...]
    answer: str
    well_formed: bool


def clean_coarse(coarse: str, max_chars: int) -> str:
    """A coarse output made safe for the `[COARSE]` slot: markers removed, cut to `max_chars`."""
    return coarse.replace(COARSE, "").replace(REFINE, "").strip()[:max_chars]


def refiner_input(prompt: str, coarse: str | None, fmt: RefinerFormatSettings) -> str:
    """The refiner's input text: `{prompt}[COARSE]{coarse}[REFINE]` (+ the prompt again if asked).

    `coarse` None, or `fmt.use_coarse` false, leaves the slot empty (the `skip_coarse` input).
    """
    if COARSE in prompt or REFINE in prompt:
        raise ValueError(f"prompt {prompt!r} contains a cascade marker ({COARSE} or {REFINE})")
    slot = clean_coarse(coarse, fmt.max_coarse_chars) if coarse is not None and fmt.use_coarse else ""
    text = f"{prompt}{COARSE}{slot}{REFINE}"
    return text + prompt if fmt.repeat_prompt else text


def split_refiner_input(text: str) -> tuple[str, str]:
    """The (prompt, coarse) of a refiner input; ValueError when the markers are missing or out of order."""
    head, sep_coarse, rest = text.partition(COARSE)
    coarse, sep_refine, _ = rest.partition(REFINE)
    if not sep_coarse or not sep_refine or REFINE in head or COARSE in coarse:
        raise ValueError(f"refiner input {text!r}: expected '<prompt>{COARSE}<coarse>{REFINE}'")
    return head, coarse


def refiner_target(record: Mapping[str, Any], fmt: RefinerFormatSettings) -> str:
    """The text the refiner learns for a record: its `steps` (or `response` where its family's target is `answer`)."""
    field = "steps" if fmt.target_of(str(record.get("task", ""))) == "steps" else "response"
    value = record.get(field)
    if not value:
        raise ValueError(f"record {record.get('id', record.get('prompt'))!r}: no {field!r} field to train on")
    return str(value)


def parse_steps(output: str) -> ParsedSteps:
    """Steps and final answer of an output; the answer is the text after the last `:` (else the whole text).

    Well-formed: a non-empty answer and, when a separator is present, non-empty steps between delimiters.
    """
    text = output.strip()
    if STEP_SEPARATOR not in text:
        return ParsedSteps((), text, bool(text))
    body, answer = text.rsplit(STEP_SEPARATOR, 1)
    steps = tuple(part.strip() for part in body.split(STEP_DELIMITER))
    answer = answer.strip()
    return ParsedSteps(steps, answer, bool(answer) and all(steps))


def final_answer(output: str) -> str:
    """The final answer text of an output (after the last step separator)."""
    return parse_steps(output).answer


def refiner_record(record: Mapping[str, Any], coarse: str | None, fmt: RefinerFormatSettings) -> dict[str, Any]:
    """A training row for `train_sft`: `prompt` is the refiner input, `target` the steps or answer.

    `source_prompt` and `coarse_correct` (0 when unknown) are kept for the self-improvement reward.
    """
    return {
        "id": record.get("id", ""),
        "task": record["task"],
        "difficulty": record.get("difficulty", 0),
        "prompt": refiner_input(str(record["prompt"]), coarse, fmt),
        "target": refiner_target(record, fmt),
        "answer": record["answer"],
        "source_prompt": str(record["prompt"]),
        "coarse_correct": float(record.get("coarse_correct", 0.0)),
    }
