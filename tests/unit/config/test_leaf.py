"""`cascadelab.config` is a leaf: it imports no other library code, and loading params.yaml imports no torch."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
CONFIG = ROOT / "src" / "cascadelab" / "config"


def _module_level_imports(path: Path) -> list[str]:
    """Modules imported by a file's top-level statements (not inside functions or methods)."""
    names: list[str] = []
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
    return names


def test_config_imports_no_other_library_module():
    offenders = [
        f"{path.name}: {name}"
        for path in sorted(CONFIG.glob("*.py"))
        for name in _module_level_imports(path)
        if name.split(".")[0] == "cascadelab" and not name.startswith("cascadelab.config")
    ]
    assert offenders == []


def test_loading_params_imports_neither_torch_nor_transformers():
    code = (
        "import sys; import cascadelab.config as c; c.load_params('params.yaml'); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers')))"
    )
    env_path = str(ROOT / "src")
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env={"PYTHONPATH": env_path}, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
