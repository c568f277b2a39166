"""Imports run one way (docs: DESIGN.md, "Layout"): a static check of every import in src/cascadelab.

A *unit* is a top-level module or package of `cascadelab` (``training``, ``config``, ``io``, ...); the
package's own ``__init__`` is the unit ``cascadelab``, which every module may import. Lazy imports inside
functions and ``TYPE_CHECKING`` imports count like any other.
"""

from __future__ import annotations

import ast
import functools
import graphlib
from collections.abc import Iterator
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"

# ---- The rules ----------------------------------------------------------------------------------------
# stages → pipeline → training/cascade → models/data → kernels. A unit may import its own modules, the
# leaves, and the units of every layer below its own; within a layer only the one-way edges listed.
LAYERS = (
    ("pipeline", "report"),  # stage logic and its runtime, the report's rendering
    ("training", "cascade"),
    ("eval",),  # metrics and generation helpers, used by training and cascade
    ("models", "data"),
    ("kernels", "sandbox"),
)
WITHIN_LAYER = {("pipeline", "report"), ("training", "cascade"), ("models", "data")}
# Leaves every layer may use; a leaf imports only leaves.
LEAVES = ("config", "io", "plotting", "ranks", "tracking")
# Units that import nothing of cascadelab but themselves: the schema, and the sandbox (a security boundary).
SELF_CONTAINED = ("config", "sandbox")
# Leaves a unit may not use: models hold only models (no schema, no tracking).
BANNED_LEAVES = {"models": ("config", "tracking")}
# Third-party packages a unit may not import: the batch layer stays free of TRL.
BANNED_THIRD_PARTY = {"data": ("trl",)}


# ---- The import graph ---------------------------------------------------------------------------------
@functools.cache
def _modules() -> dict[str, Path]:
    """Every module of cascadelab by dotted name (a package by its own name)."""
    modules = {}
    for path in sorted((SRC / "cascadelab").rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _imports(module: str, path: Path, known: dict[str, Path]) -> Iterator[str]:
    """Dotted names `module` imports, anywhere in its body; `from a import b` names module a.b where it is one."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, one level up per extra dot
                base = ".".join(filter(None, [package.rsplit(".", node.level - 1)[0], base]))
            for alias in node.names:
                yield f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base


def _unit(module: str) -> str:
    """The top-level unit of a cascadelab module (``cascadelab`` for the package itself)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


@functools.cache
def _imports_by_module() -> dict[str, frozenset[str]]:
    """What each cascadelab module imports (parsed once per session)."""
    modules = _modules()
    return {module: frozenset(_imports(module, path, modules)) for module, path in modules.items()}


def _edges() -> set[tuple[str, str]]:
    """(importer, imported) for every import of one cascadelab module by another."""
    return {
        (module, target)
        for module, targets in _imports_by_module().items()
        for target in targets
        if target.split(".")[0] == "cascadelab" and target != module
    }


def _layer(unit: str) -> int:
    for index, layer in enumerate(LAYERS):
        if unit in layer:
            return index
    raise AssertionError(f"cascadelab.{unit} has no place in the rule table of {Path(__file__).name}")


def _allowed(importer: str, imported: str) -> bool:
    """Whether unit `importer` may import unit `imported`."""
    if importer == imported or imported == "cascadelab":
        return True
    if importer in SELF_CONTAINED:
        return False
    if imported in LEAVES:
        return imported not in BANNED_LEAVES.get(importer, ())
    if importer in LEAVES:
        return False
    return _layer(importer) < _layer(imported) or (importer, imported) in WITHIN_LAYER


def _cross_unit_edges() -> set[tuple[str, str]]:
    return {(a, b) for a, b in _edges() if _unit(a) != _unit(b)}


# ---- The checks -----------------------------------------------------------------------------------------
def test_imports_run_one_way() -> None:
    violations = {f"{a} -> {b}" for a, b in _cross_unit_edges() if not _allowed(_unit(a), _unit(b))}
    assert not violations, "imports against DESIGN's direction:\n" + "\n".join(sorted(violations))


def test_units_form_no_cycle() -> None:
    graph: dict[str, set[str]] = {}
    for a, b in _cross_unit_edges():
        graph.setdefault(_unit(a), set()).add(_unit(b))
    try:
        tuple(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as error:
        raise AssertionError(f"package cycle: {' -> '.join(error.args[1])}") from None


def test_banned_third_party_packages_are_not_imported() -> None:
    found = {
        f"{module} -> {name}"
        for module, names in _imports_by_module().items()
        for name in names
        if name.split(".")[0] in BANNED_THIRD_PARTY.get(_unit(module), ())
    }
    assert not found, "banned imports:\n" + "\n".join(sorted(found))


def test_the_rules_say_what_design_says() -> None:
    assert not _allowed("models", "training") and not _allowed("models", "config")
    assert not _allowed("data", "models") and _allowed("models", "data")
    assert not any(_allowed("data", unit) for unit in ("training", "cascade", "pipeline"))
    assert "trl" in BANNED_THIRD_PARTY["data"]
    assert not _allowed("cascade", "training") and _allowed("training", "cascade")
    assert not _allowed("sandbox", "io") and not _allowed("config", "io") and _allowed("tracking", "io")
    assert not _allowed("io", "training") and _allowed("pipeline", "kernels")
