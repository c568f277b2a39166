"""Models hold only models: nothing under `cascadelab.models` imports a layer above it or the config schema."""

from __future__ import annotations

import ast
from pathlib import Path

import cascadelab.models

MODELS_DIR = Path(cascadelab.models.__file__).parent
FORBIDDEN = (
    "training",
    "tracking",
    "pipeline",
    "config",
    "params_base",
    "stage",
    "cascade",
    "sandbox",
    "evolution",
    "research",
    "report",
)


def imported_modules(path: Path) -> list[str]:
    """Every module an `import` or `from ... import` in `path` names, lazy imports included."""
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def test_models_import_neither_training_nor_config_nor_any_layer_above() -> None:
    offending = [
        f"{path.relative_to(MODELS_DIR.parent)}: {name}"
        for path in sorted(MODELS_DIR.rglob("*.py"))
        for name in imported_modules(path)
        if name.split(".")[:2] in (["cascadelab", layer] for layer in FORBIDDEN)
    ]
    assert offending == []


def test_the_check_sees_a_lazy_import(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from cascadelab.training.trainer import x\n    import cascadelab.config\n")
    assert imported_modules(module) == ["cascadelab.training.trainer", "cascadelab.config"]
