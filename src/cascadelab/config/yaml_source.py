"""Reading params.yaml: YAML 1.2 scalars as DVC reads them, duplicate keys refused, errors as `<file>:<line>:<col>`.

PyYAML follows YAML 1.1, where `yes`/`on` are booleans and `1e-3` is a string; DVC (ruamel, YAML 1.2)
reads `yes` as a string and `1e-3` as a number, and so does this loader, so a value means the same to the
stage as to `dvc params diff` and `-S` overrides.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ClassVar

import yaml

_BOOL_TAG = "tag:yaml.org,2002:bool"
_FLOAT_TAG = "tag:yaml.org,2002:float"
_YAML12_BOOL = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")
_YAML12_FLOAT = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)


class ParamsLoader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2 booleans and floats, refusing a key given twice in one mapping."""

    yaml_implicit_resolvers: ClassVar[dict[Any, list[tuple[str, re.Pattern[str]]]]] = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag not in (_BOOL_TAG, _FLOAT_TAG)]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        """The mapping of `node`; a ConstructorError at the second occurrence of a repeated key."""
        seen: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"duplicate key {key!r}, first given at line {seen[key].start_mark.line + 1}",
                    key_node.start_mark,
                )
            seen[key] = key_node
        return super().construct_mapping(node, deep=deep)


ParamsLoader.add_implicit_resolver(_BOOL_TAG, _YAML12_BOOL, list("tTfF"))
ParamsLoader.add_implicit_resolver(_FLOAT_TAG, _YAML12_FLOAT, list("-+0123456789."))


def yaml_error_line(path: Path | str, error: yaml.YAMLError) -> str:
    """One line for a YAML error: `<file>:<line>:<column>: not valid YAML (<problem>[, <context> at <where>])`."""
    if not isinstance(error, yaml.MarkedYAMLError) or error.problem_mark is None:
        return f"{path}: not valid YAML ({str(error).splitlines()[0]})"
    mark = error.problem_mark
    detail = error.problem or "syntax error"
    context = error.context_mark
    if error.context and context is not None and (context.line, context.column) != (mark.line, mark.column):
        detail = f"{detail}, {error.context} at line {context.line + 1}, column {context.column + 1}"
    return f"{path}:{mark.line + 1}:{mark.column + 1}: not valid YAML ({detail})"


def load_yaml(text: str, path: Path | str) -> Any:
    """The YAML document in `text` (read from `path`), or ValueError with `yaml_error_line`'s one line."""
    try:
        return yaml.load(text, Loader=ParamsLoader)  # ParamsLoader is a SafeLoader
    except yaml.YAMLError as error:
        raise ValueError(yaml_error_line(path, error)) from None
