"""Stage code deps derived from imports: dvc.yaml lists every module a stage script loads, and no other."""

from __future__ import annotations

from pathlib import Path

from cascadelab.pipeline.deps import DVC_YAML, code_deps, collapse, imported_modules, main, rewrite, stage_deps


def test_dvc_yaml_lists_every_module_each_stage_imports_and_none_it_does_not() -> None:
    stages = stage_deps()
    assert len(stages) == 14
    problems = {stage.name: stage.missing() + stage.stale() for stage in stages}
    assert not any(problems.values()), f"run `PYTHONPATH=src python -m cascadelab.pipeline.deps --write`: {problems}"


def test_rewriting_the_current_dvc_yaml_changes_nothing() -> None:
    text = DVC_YAML.read_text(encoding="utf-8")
    assert rewrite(text, stage_deps()) == text


def _package(root: Path) -> Path:
    src = root / "src"
    files = {
        "cascadelab/__init__.py": "",
        "cascadelab/a/__init__.py": "from . import b\n",
        "cascadelab/a/b.py": "from .c import X\n",
        "cascadelab/a/c.py": "X = 1\n",
        "cascadelab/d.py": "def f():\n    import cascadelab.e\n",
        "cascadelab/e.py": "",
        "cascadelab/typed.py": "import typing\nif typing.TYPE_CHECKING:\n    from cascadelab import unused\n",
        "cascadelab/unused.py": "",
    }
    for name, text in files.items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_text(text)
    return src


def test_imports_resolve_packages_relative_imports_and_lazy_ones_but_not_type_checking(tmp_path: Path) -> None:
    src = _package(tmp_path)
    script = tmp_path / "stage.py"
    script.write_text("import os\nfrom cascadelab.a import b\nfrom cascadelab import d, typed\n")
    assert imported_modules(script, src) == {
        "cascadelab",
        "cascadelab.a",
        "cascadelab.a.b",
        "cascadelab.d",
        "cascadelab.typed",
    }
    names = [path.relative_to(src).as_posix() for path in code_deps(script, src)]
    assert names == [
        "cascadelab/__init__.py",
        "cascadelab/a/__init__.py",
        "cascadelab/a/b.py",
        "cascadelab/a/c.py",
        "cascadelab/d.py",
        "cascadelab/e.py",
        "cascadelab/typed.py",
    ]


def test_the_tool_reports_a_missing_dep_then_writes_it_keeping_data_deps_and_comments(tmp_path: Path) -> None:
    _package(tmp_path)
    (tmp_path / "stages").mkdir()
    (tmp_path / "stages" / "one.py").write_text("from cascadelab import e\n")
    dvc_yaml = tmp_path / "dvc.yaml"
    dvc_yaml.write_text(
        "stages:\n"
        "  one:\n"
        "    cmd: PYTHONPATH=src python stages/one.py\n"
        "    deps:\n"
        "      - stages/one.py\n"
        "      - data/corpus   # read only\n"
        "      - src/cascadelab/d.py\n"
        "    params:\n"
        "      - seed\n"
    )
    assert main(["--dvc-yaml", str(dvc_yaml)]) == 1
    assert main(["--dvc-yaml", str(dvc_yaml), "--write"]) == 0
    assert dvc_yaml.read_text() == (
        "stages:\n"
        "  one:\n"
        "    cmd: PYTHONPATH=src python stages/one.py\n"
        "    deps:\n"
        "      - stages/one.py\n"
        "      - data/corpus   # read only\n"
        "      - src/cascadelab/__init__.py\n"
        "      - src/cascadelab/e.py\n"
        "    params:\n"
        "      - seed\n"
    )
    assert main(["--dvc-yaml", str(dvc_yaml)]) == 0


def test_a_folder_the_stage_loads_whole_is_one_dep_and_a_partly_loaded_one_lists_its_files(tmp_path: Path) -> None:
    src = tmp_path / "src"
    for name in ("pkg/__init__.py", "pkg/a.py", "pkg/sub/__init__.py", "pkg/sub/c.py", "pkg/__pycache__/a.py"):
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_text("")
    whole = [src / "pkg/__init__.py", src / "pkg/a.py", src / "pkg/sub/__init__.py", src / "pkg/sub/c.py"]
    assert collapse(whole, src) == [src / "pkg"]
    assert collapse(whole[1:], src) == [src / "pkg/a.py", src / "pkg/sub"]
