"""The data layer sits below training, models and cascade: it imports none of them, nor TRL."""

from __future__ import annotations

import ast
from pathlib import Path

DATA = Path(__file__).resolve().parents[3] / "src" / "cascadelab" / "data"
FORBIDDEN = ("cascadelab.training", "cascadelab.models", "cascadelab.cascade", "cascadelab.pipeline", "trl")


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def test_no_data_module_imports_a_higher_layer_or_trl() -> None:
    offences = [
        f"{path.name}: {name}"
        for path in sorted(DATA.glob("*.py"))
        for name in sorted(_imports(path))
        if any(name == bad or name.startswith(bad + ".") for bad in FORBIDDEN)
    ]
    assert offences == []
