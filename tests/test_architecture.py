"""The architecture stays as docs/design.md says: one owner of the run directory's layout,
every module on the map, imports running one way."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tlkit.io.rundir import RunDir

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "tlkit"

FILE_NAMES = (
    RunDir.CONFIG,
    RunDir.CLASSES,
    RunDir.MODEL,
    RunDir.HISTORY,
    RunDir.METRICS,
    RunDir.REPORT,
    RunDir.STATE,
    RunDir.CHECKPOINT_FILE,
    RunDir.LAST_WEIGHTS,
    RunDir.BEST_WEIGHTS,
    RunDir.OPTIMIZER,
    *RunDir.EVALUATION_FILES.values(),
)
FOLDER_NAMES = (RunDir.PLOTS, RunDir.EVALUATION, RunDir.CHECKPOINTS, RunDir.LOGS)


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def _docstring_nodes(tree: ast.AST) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
        ):
            found.add(id(body[0].value))
    return found


def _run_dir_literals(path: Path) -> list[str]:
    """String literals (docstrings aside) that spell a run-directory file, or join a run-directory folder."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = _docstring_nodes(tree)
    hits = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            if any(name in node.value for name in FILE_NAMES):
                hits.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value[:60]!r}")
        if (
            isinstance(node, ast.BinOp)
            and isinstance(node.op, ast.Div)
            and isinstance(node.right, ast.Constant)
            and node.right.value in FOLDER_NAMES
        ):
            hits.append(f"{path.relative_to(ROOT)}:{node.lineno}: / {node.right.value!r}")
    return hits


def test_only_rundir_spells_the_run_directory_layout():
    hits = [hit for path in _modules() if path.name != "rundir.py" for hit in _run_dir_literals(path)]
    assert hits == [], "use RunDir's paths and names instead:\n" + "\n".join(hits)


def test_the_literal_check_catches_a_spelled_name(tmp_path):
    sample = PACKAGE / "_sample_for_test.py"
    sample.write_text('"""metrics.json in a docstring is fine."""\nP = run / "plots"\nQ = f"{run}/model.keras"\n')
    try:
        assert len(_run_dir_literals(sample)) == 2
    finally:
        sample.unlink()


def _module_name(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def test_every_module_is_on_the_design_map():
    design = (ROOT / "docs" / "design.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"`(tlkit/[\w/]+\.py)`", design))
    missing = [_module_name(p) for p in _modules() if _module_name(p) not in listed]
    assert missing == [], f"add these modules to the module map in docs/design.md: {missing}"
    gone = sorted(m for m in listed if not (ROOT / m).is_file())
    assert gone == [], f"docs/design.md lists modules that no longer exist: {gone}"


def _tlkit_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tlkit"):
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names if alias.name.startswith("tlkit"))
    return names


# `python -m tlkit` (__main__.py) is an entry point like the console script: it may.
@pytest.mark.parametrize(
    "path",
    [p for p in _modules() if "cli" not in p.relative_to(PACKAGE).parts and p.name != "__main__.py"],
    ids=lambda p: _module_name(p),
)
def test_the_library_never_imports_the_cli(path):
    assert not [name for name in _tlkit_imports(path) if name.startswith("tlkit.cli")]


def test_the_api_is_a_thin_facade():
    lines = (PACKAGE / "api.py").read_text(encoding="utf-8").count("\n")
    assert lines <= 200, f"tlkit/api.py has {lines} lines; move logic into the module that owns it"
