"""Rewrite params.yaml's per-key comments from the schema's field descriptions.

`python -m cascadelab.config.document [params.yaml]` rewrites the file in place; `--check` only reports
whether it is in sync. Every key line ends in `# <its field's description>`; comment lines of their own
(notes on a chosen value, commented-out keys) stay above the key they precede. Keys, values and their
order are kept: `yaml.safe_load` of the old and the new text are equal. Mappings of schema sections are
written in block style (one documented key a line); other mappings and lists stay in flow style.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from cascadelab.config.base import entry_class, section_class
from cascadelab.config.params import Params

COMMENT_COLUMN = 47  # 0-based column of the `#` after a short key line, as params.yaml always had it
INDENT = "  "


def _flow(value: Any) -> str:
    """`value` as one line of flow-style YAML."""
    return yaml.safe_dump(
        [value], default_flow_style=True, width=sys.maxsize, allow_unicode=True, sort_keys=False
    ).strip()[1:-1]


def _split_comment(line: str) -> tuple[str, str]:
    """(the YAML text, the comment text) of a line, ignoring `#` inside quotes."""
    quote = ""
    for i, char in enumerate(line):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1] in " \t"):
            return line[:i].rstrip(), line[i + 1 :].strip()
    return line.rstrip(), ""


def _notes(text: str) -> dict[tuple[str, ...], list[str]]:
    """Own-line comments (and the blank lines among them), keyed by the path of the key line they precede."""
    notes: dict[tuple[str, ...], list[str]] = {}
    pending: list[str] = []
    stack: list[tuple[int, str]] = []
    depth = 0  # open flow brackets carried over from earlier lines
    for line in text.splitlines():
        body, _ = _split_comment(line)
        if depth == 0 and not body.strip():
            if line.strip() or pending:
                pending.append(line.rstrip())
            continue
        if depth == 0:
            indent = len(body) - len(body.lstrip())
            key = body.strip().split(":", 1)[0]
            while stack and stack[-1][0] >= indent:
                stack.pop()
            stack.append((indent, key))
            while pending and not pending[-1]:
                pending.pop()  # blank lines right above a key are layout, written anew
            if pending:
                notes[tuple(name for _, name in stack)] = pending
            pending = []
        depth += sum(body.count(c) for c in "{[") - sum(body.count(c) for c in "}]")
    return notes


def _key_line(indent: int, key: str, value_text: str, description: str) -> str:
    """One `key: value  # description` line, the comment aligned at COMMENT_COLUMN where the line is short."""
    text = f"{INDENT * indent}{key}:{' ' + value_text if value_text else ''}"
    if not description:
        return text
    return f"{text.ljust(COMMENT_COLUMN - 2)}  # {description}"


def _emit(
    mapping: dict[str, Any],
    model: type[BaseModel] | None,
    path: tuple[str, ...],
    notes: dict[tuple[str, ...], list[str]],
    out: list[str],
) -> None:
    """Append the lines of `mapping` (a section of `model`, or free-named entries when `model` is None)."""
    for key, value in mapping.items():
        key_path = (*path, key)
        if not path and out:
            out.append("")
        out.extend(notes.get(key_path, []))
        field = model.model_fields.get(key) if model else None
        if model is not None and field is None:
            raise ValueError(f"{'.'.join(key_path)}: not a key of the schema")
        description = field.description or "" if field else ""
        section = section_class(field.annotation) if field else None
        entries = entry_class(field.annotation) if field else None
        depth = len(path)
        if isinstance(value, dict) and value and (section or entries):
            out.append(_key_line(depth, key, "", description))
            if section:
                _emit(value, section, key_path, notes, out)
            else:
                for name, entry in value.items():
                    out.extend(notes.get((*key_path, name), []))
                    out.append(_key_line(depth + 1, name, "", ""))
                    _emit(entry, entries, (*key_path, name), notes, out)
        else:
            out.append(_key_line(depth, key, _flow(value), description))


def document(text: str) -> str:
    """params.yaml's text with every key's comment drawn from its field's description."""
    raw = yaml.safe_load(text) or {}
    out: list[str] = []
    _emit(raw, Params, (), _notes(text), out)
    new = "\n".join(out) + "\n"
    if yaml.safe_load(new) != raw:  # pragma: no cover - a bug here must never reach params.yaml
        raise AssertionError("documenting params.yaml changed its values")
    return new


def main(argv: list[str]) -> int:
    """Rewrite (or with --check, compare) the params file named in argv (default params.yaml)."""
    check = "--check" in argv
    paths = [arg for arg in argv if arg != "--check"]
    path = Path(paths[0] if paths else "params.yaml")
    old = path.read_text()
    new = document(old)
    if check:
        if new != old:
            print(f"{path}: comments out of sync with the schema; run python -m cascadelab.config.document")
            return 1
        return 0
    path.write_text(new)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
