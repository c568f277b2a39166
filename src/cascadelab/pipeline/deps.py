"""Each stage's code dependencies, derived from its script's imports, checked against or written to dvc.yaml.

A stage depends on every `cascadelab` module its script imports, directly or through other modules
(imports inside functions count, `if TYPE_CHECKING:` blocks do not), and on each enclosing package's
`__init__.py`. dvc.yaml lists them under the stage's `deps:` (a listed folder covers its files), after
the script and the stage's data deps, which this tool keeps as they are, in their order. A folder whose
every module the stage loads is written as the folder (`.dvcignore` keeps `__pycache__` out of its hash).

    PYTHONPATH=src python -m cascadelab.pipeline.deps          # report what dvc.yaml lacks or lists in vain
    PYTHONPATH=src python -m cascadelab.pipeline.deps --write  # rewrite every stage's code deps from imports
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

PACKAGE = "cascadelab"
SRC = Path("src")
DVC_YAML = Path("dvc.yaml")
SCRIPT = re.compile(r"\bpython\s+(stages/\S+\.py)")


def module_file(module: str, src: Path = SRC) -> Path | None:
    """The file that defines `module` below `src` (a package's `__init__.py`), or None when there is none."""
    base = src.joinpath(*module.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(nodes: Iterable[ast.AST]) -> Iterator[ast.Import | ast.ImportFrom]:
    for node in nodes:
        if isinstance(node, ast.If) and _is_type_checking(node):
            yield from _import_nodes(node.orelse)  # the `if` body only runs under a type checker
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        yield from _import_nodes(ast.iter_child_nodes(node))


def _package_of(path: Path, src: Path) -> list[str]:
    parts = list(path.relative_to(src).with_suffix("").parts)
    return parts[:-1]  # a module's package; for `pkg/__init__.py` the trailing `__init__` goes


def imported_modules(path: Path, src: Path = SRC) -> set[str]:
    """The `cascadelab` modules `path` imports, each with its enclosing packages (`a.b.c` → `a`, `a.b`, `a.b.c`)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    inside_src = path.resolve().is_relative_to(src.resolve())
    names: set[str] = set()
    for node in _import_nodes([tree]):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
            continue
        base = node.module or ""
        if node.level and inside_src:
            package = _package_of(path, src)
            base = ".".join([*package[: len(package) - node.level + 1], *([base] if base else [])])
        names.add(base)
        names.update(f"{base}.{alias.name}" for alias in node.names)  # `from pkg import module`
    modules = {name for name in names if name.split(".")[0] == PACKAGE and module_file(name, src)}
    return {".".join(m.split(".")[: i + 1]) for m in modules for i in range(m.count(".") + 1)}


def code_deps(script: Path, src: Path = SRC) -> list[Path]:
    """Every `cascadelab` source file `script` loads, transitively, sorted."""
    seen: set[str] = set()
    todo = [script]
    while todo:
        for module in imported_modules(todo.pop(), src) - seen:
            seen.add(module)
            path = module_file(module, src)
            if path is not None:
                todo.append(path)
    files = {module_file(module, src) for module in seen}
    return sorted(path for path in files if path is not None)


def collapse(files: Iterable[Path], root: Path) -> list[Path]:
    """`files` with each largest folder below `root` whose every `.py` file is among them written as the folder."""
    wanted = set(files)

    def full(folder: Path) -> bool:
        return all(path in wanted for path in folder.rglob("*.py") if "__pycache__" not in path.parts)

    kept = set()
    for path in wanted:
        top = path
        for folder in path.parents:
            if folder == root or root not in folder.parents or not full(folder):
                break
            top = folder
        kept.add(top)
    return sorted(kept)


@dataclass(frozen=True)
class StageDeps:
    """One dvc.yaml stage: its script, its listed deps, and the code deps its imports call for."""

    name: str
    script: str
    listed: list[str]
    derived: list[str]

    def missing(self) -> list[str]:
        """Derived deps (files, or folders the stage loads whole) that no listed dep covers."""
        return [path for path in self.derived if not any(_covers(dep, path) for dep in self.listed)]

    def stale(self) -> list[str]:
        """Listed source deps (below `src/`) that cover no derived file."""
        return [dep for dep in self.listed if _is_code(dep) and not any(_covers(dep, path) for path in self.derived)]

    def rewritten(self) -> list[str]:
        """The deps to list: the script, the data deps as listed, then the derived code deps."""
        data = [dep for dep in self.listed if dep != self.script and not _is_code(dep)]
        return [self.script, *data, *self.derived]


def _covers(dep: str, path: str) -> bool:
    return path == dep or path.startswith(dep.rstrip("/") + "/")


def _is_code(dep: str) -> bool:
    return dep.startswith(f"{SRC.as_posix()}/")


def stage_deps(dvc_yaml: Path = DVC_YAML, src: Path = SRC) -> list[StageDeps]:
    """Every stage of `dvc_yaml` whose command runs a `stages/*.py` script, with listed and derived deps."""
    root = dvc_yaml.parent
    stages = yaml.safe_load(dvc_yaml.read_text(encoding="utf-8"))["stages"]
    result = []
    for name, stage in stages.items():
        match = SCRIPT.search(stage["cmd"])
        if match is None:
            continue
        script = match.group(1)
        files = collapse(code_deps(root / script, root / src), root / src)
        derived = [path.relative_to(root).as_posix() for path in files]
        result.append(StageDeps(name, script, [str(dep) for dep in stage.get("deps", [])], derived))
    return result


def rewrite(text: str, stages: Sequence[StageDeps]) -> str:
    """`text` (dvc.yaml) with each stage's `deps:` list replaced by its rewritten one; all else byte for byte."""
    by_name = {stage.name: stage for stage in stages}
    lines = text.splitlines(keepends=True)
    out: list[str] = []
    current: str | None = None
    index = 0
    while index < len(lines):
        line = lines[index]
        header = re.fullmatch(r"  (\w+):\s*\n?", line)
        if header:
            current = header.group(1)
        out.append(line)
        index += 1
        if line.rstrip() == "    deps:" and current in by_name:
            kept: dict[str, str] = {}
            while index < len(lines) and lines[index].startswith("      - "):
                kept[lines[index][8:].split("#")[0].strip()] = lines[index]
                index += 1
            out += [kept.get(dep, f"      - {dep}\n") for dep in by_name[current].rewritten()]
    return "".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    """Report missing and stale code deps (exit 1 if any), or rewrite them into dvc.yaml with `--write`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="rewrite the deps in dvc.yaml")
    parser.add_argument("--dvc-yaml", type=Path, default=DVC_YAML)
    args = parser.parse_args(argv)
    stages = stage_deps(args.dvc_yaml)
    if args.write:
        text = args.dvc_yaml.read_text(encoding="utf-8")
        args.dvc_yaml.write_text(rewrite(text, stages), encoding="utf-8")
        print(f"{args.dvc_yaml}: code deps of {len(stages)} stages rewritten")
        return 0
    problems = [
        f"{stage.name}: {kind} {path}"
        for stage in stages
        for kind, paths in (("missing", stage.missing()), ("stale", stage.stale()))
        for path in paths
    ]
    print("\n".join(problems) or f"{args.dvc_yaml}: code deps of {len(stages)} stages match their imports")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
