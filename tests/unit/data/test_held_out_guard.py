"""The test split is read only inside a stage's final evaluation: at run time and in the source."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from cascadelab.data.corpus import SPLITS, held_out_prompts, load_split, write_corpus
from cascadelab.data.held_out import final_evaluation

ROOT = Path(__file__).resolve().parents[3]
LIBRARY = ROOT / "src" / "cascadelab"
# sandbox/ imports nothing of the library (it cannot open a split); its "test" is a sandbox test's index.
SOURCES = [p for p in sorted(LIBRARY.rglob("*.py")) if "sandbox" not in p.relative_to(LIBRARY).parts]

# Every `with final_evaluation(...)` in the library: (module, enclosing function). One stage's final
# evaluation each; a new entry is a new place that reads test and needs a reason here.
FINAL_EVALUATIONS = {
    ("pipeline/coarse_sft.py", "run"),
    ("pipeline/hybrid_rnn.py", "run"),
    ("pipeline/cascade_eval.py", "run"),
    ("pipeline/sigma_pretrain.py", "train_and_evaluate"),  # each model's scores
    ("pipeline/sigma_pretrain.py", "run"),  # the sample predictions beside them
    ("pipeline/sigma_rl.py", "run"),  # one read: the same items score the model before and after RL
    # Loaded before training, scored only at its end (inside train_phase2 / each arm's run_arm):
    ("pipeline/lego_phase2.py", "run"),
    ("pipeline/acoc.py", "load_study_data"),
}


def _corpus(folder: Path) -> Path:
    record = {"id": "x", "task": "add", "difficulty": 1, "prompt": "1+1=", "response": "2", "answer": "2"}
    splits = {split: [{**record, "id": split, "prompt": f"{split}:1+1="}] for split in SPLITS}
    write_corpus(splits, {"answer_format": "plain"}, folder)
    return folder


def test_test_split_outside_final_evaluation_is_refused_in_one_line(tmp_path: Path) -> None:
    corpus = _corpus(tmp_path / "corpus")
    with pytest.raises(PermissionError) as error:
        load_split(corpus, "test")
    assert str(error.value) == (
        f"{corpus / 'test.jsonl'}: the test split is read only inside a stage's final evaluation "
        "(cascadelab.data.held_out.final_evaluation)"
    )


def test_train_and_val_read_anywhere_test_inside_final_evaluation(tmp_path: Path) -> None:
    corpus = _corpus(tmp_path / "corpus")
    assert [r["id"] for r in load_split(corpus, "train") + load_split(corpus, "val")] == ["train", "val"]
    with final_evaluation("coarse_sft"):
        assert [r["id"] for r in load_split(corpus, "test")] == ["test"]
    with pytest.raises(PermissionError):  # the permission ends with the block
        load_split(corpus, "test")


def test_held_out_prompts_are_val_then_test_prompts_only(tmp_path: Path) -> None:
    assert held_out_prompts(_corpus(tmp_path / "corpus")) == ["val:1+1=", "test:1+1="]


def _names_test(node: ast.AST) -> bool:
    return any(isinstance(n, ast.Constant) and n.value in ("test", "test.jsonl") for n in ast.walk(node))


def violations(path: Path, rel: str) -> tuple[list[str], set[tuple[str, str]]]:
    """Calls naming the test split outside a `with final_evaluation` block, and where such blocks are."""
    found: list[str] = []
    blocks: set[tuple[str, str]] = set()

    def visit(node: ast.AST, function: str, inside: bool) -> None:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            function = node.name
        if isinstance(node, ast.With) and any(
            isinstance(item.context_expr, ast.Call) and getattr(item.context_expr.func, "id", "") == "final_evaluation"
            for item in node.items
        ):
            blocks.add((rel, function))
            inside = True
        if isinstance(node, ast.Call) and not inside and any(_names_test(a) for a in [*node.args, *node.keywords]):
            found.append(f"{rel}:{node.lineno} ({function}) names the test split outside a final evaluation")
        for child in ast.iter_child_nodes(node):
            visit(child, function, inside)

    visit(ast.parse(path.read_text(encoding="utf-8")), "<module>", False)
    return found, blocks


def scan(sources: list[Path], root: Path) -> tuple[list[str], set[tuple[str, str]]]:
    """Every violation and every final-evaluation block across `sources` (paths relative to `root`)."""
    found: list[str] = []
    blocks: set[tuple[str, str]] = set()
    for path in sources:
        rel = path.relative_to(root).as_posix()
        more, where = violations(path, rel)
        found += more
        blocks |= where
    return found, blocks


def test_no_call_names_the_test_split_outside_a_final_evaluation() -> None:
    found, blocks = scan(SOURCES, LIBRARY)
    stage_found, _ = scan(sorted((ROOT / "stages").glob("*.py")), ROOT)
    assert found + stage_found == []
    assert blocks == FINAL_EVALUATIONS


def test_the_scan_catches_a_read_outside_and_a_new_final_evaluation(tmp_path: Path) -> None:
    module = tmp_path / "stage.py"
    module.write_text(
        "def choose(d):\n    return load_split(d, 'test')\n\n"
        "def evaluate(d):\n    with final_evaluation('x'):\n        return load_split(d, 'test')\n"
    )
    found, blocks = scan([module], tmp_path)
    assert found == ["stage.py:2 (choose) names the test split outside a final evaluation"]
    assert blocks == {("stage.py", "evaluate")}
