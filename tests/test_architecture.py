"""The architecture stays as docs/design.md says: packages by stage, imports running down the layer
order written there (lazy imports included), no import cycle, one owner of the run directory's layout."""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

import pytest

from tests.support import docstring_nodes
from tlkit.io.rundir import RunDir

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "tlkit"
DESIGN = ROOT / "docs" / "design.md"
MAX_TOP_LEVEL_MODULES = 12
MAX_MODULE_LINES = 600

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
    RunDir.TRACKING,
    *RunDir.EVALUATION_FILES.values(),
)
FOLDER_NAMES = (RunDir.PLOTS, RunDir.EVALUATION, RunDir.CHECKPOINTS, RunDir.LOGS)


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def _dotted(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_dotted(p): p for p in _modules()}


# --------------------------------------------------------------------------- the run directory's layout


def _run_dir_literals(path: Path) -> list[str]:
    """String literals (docstrings aside) that spell a run-directory file, or join a run-directory folder."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = docstring_nodes(tree)
    hits = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            if any(name in node.value for name in FILE_NAMES):
                hits.append(f"{path.name}:{node.lineno}: {node.value[:60]!r}")
        if (
            isinstance(node, ast.BinOp)
            and isinstance(node.op, ast.Div)
            and isinstance(node.right, ast.Constant)
            and node.right.value in FOLDER_NAMES
        ):
            hits.append(f"{path.name}:{node.lineno}: / {node.right.value!r}")
    return hits


def test_only_rundir_spells_the_run_directory_layout():
    owner = PACKAGE / "io" / "rundir.py"
    hits = [hit for path in _modules() if path != owner for hit in _run_dir_literals(path)]
    assert hits == [], "use RunDir's paths and names instead:\n" + "\n".join(hits)


def test_the_literal_check_catches_a_spelled_name(tmp_path):
    # Written outside the package: a sample inside it would race with the other xdist worker's scan.
    sample = tmp_path / "sample.py"
    sample.write_text('"""metrics.json in a docstring is fine."""\nP = run / "plots"\nQ = f"{run}/model.keras"\n')
    assert len(_run_dir_literals(sample)) == 2


# --------------------------------------------------------------------------- imports: layers and cycles


def _imports(path: Path) -> set[str]:
    """The tlkit modules ``path`` imports, at the top or inside functions (lazy imports count)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.ImportFrom)
            and node.level == 0
            and node.module
            and node.module.split(".")[0] == "tlkit"
        ):
            for alias in node.names:  # `from tlkit.data import folders` imports the module tlkit.data.folders
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in MODULES else node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "tlkit")
    return {name for name in found if name in MODULES and name != _dotted(path)}


GRAPH = {name: _imports(path) for name, path in MODULES.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles_counting_lazy_imports():
    cycles = _cycles(GRAPH)
    assert cycles == [], f"break these import cycles (lazy imports count): {cycles}"


def test_the_cycle_check_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def _layers() -> list[list[str]]:
    """The layer order of docs/design.md (the fenced block after '## Layers'), lowest first."""
    text = DESIGN.read_text(encoding="utf-8")
    block = re.search(r"^## Layers\b.*?^```\w*\n(.*?)^```", text, re.S | re.M)
    assert block, "docs/design.md needs a '## Layers' section with the layer order in a fenced block"
    rows = []
    for line in block.group(1).splitlines():
        names = line.split("#")[0].split()
        if names:
            rows.append(["tlkit" if n == "tlkit" else f"tlkit.{n.strip(',')}" for n in names])
    return rows[::-1]  # written highest first, as a reader scans a stack


LAYERS = _layers()


def _layer_of(module: str) -> int:
    best, rank = -1, -1
    for i, names in enumerate(LAYERS):
        for name in names:
            matches = module == name or (name != "tlkit" and module.startswith(name + "."))
            if matches and len(name) > best:
                best, rank = len(name), i
    return rank


def test_every_module_has_a_layer():
    missing = sorted(m for m in MODULES if _layer_of(m) < 0)
    assert missing == [], f"add these to the layer order in docs/design.md: {missing}"


def test_imports_run_down_the_layer_order():
    upward = sorted(f"{a} -> {b}" for a, targets in GRAPH.items() for b in targets if _layer_of(b) > _layer_of(a))
    assert upward == [], "a lower layer imports a higher one (docs/design.md, Layers):\n" + "\n".join(upward)


def test_the_library_never_imports_the_cli():
    # `python -m tlkit` (__main__.py) is an entry point like the console script: it may.
    offenders = sorted(
        f"{a} -> {b}"
        for a, targets in GRAPH.items()
        if not a.startswith("tlkit.cli") and a != "tlkit.__main__"
        for b in targets
        if b.startswith("tlkit.cli")
    )
    assert offenders == []


# --------------------------------------------------------------------------- lazy imports say why


def _silent_lazy_imports(path: Path) -> list[str]:
    """Imports inside functions without a ``# lazy:`` reason in their group: on their line or above
    it, through the import statements and comment lines right above (one reason covers a group)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    tree = ast.parse("\n".join(lines))
    imports = [node for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))]
    import_lines = {i for node in imports for i in range(node.lineno - 1, node.end_lineno)}
    in_functions = {
        id(node)
        for function in ast.walk(tree)
        if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef))
        for node in ast.walk(function)
    }
    silent = []
    for node in imports:
        if id(node) not in in_functions:
            continue  # a module-level import (`if TYPE_CHECKING:` blocks included)
        first = node.lineno - 1
        while first > 0 and (first - 1 in import_lines or lines[first - 1].strip().startswith("#")):
            first -= 1
        if not any("# lazy:" in line for line in lines[first : node.end_lineno]):
            shown = path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else path.name
            silent.append(f"{shown}:{node.lineno}")
    return silent


def test_every_lazy_import_says_why():
    silent = [hit for path in _modules() for hit in _silent_lazy_imports(path)]
    assert silent == [], (
        "import at the top of the module, or say what this keeps out of which light path "
        "(# lazy: ..., on the import's line or the line above):\n" + "\n".join(silent)
    )


def test_the_lazy_import_check_catches_a_silent_one(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import os\n\n\n"
        'def silent():\n    """A docstring line is no reason,\n    from here # lazy: either."""\n    import json\n\n\n'
        "def grouped():\n    # lazy: one reason for the group\n    import keras\n    from keras import ops\n\n\n"
        "def on_the_line():\n    import numpy  # lazy: a reason\n\n    import PIL\n"
    )
    assert _silent_lazy_imports(sample) == ["sample.py:7", "sample.py:19"]


# --------------------------------------------------------------------------- shape of the package


def test_packages_by_stage_and_few_top_level_modules():
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= MAX_TOP_LEVEL_MODULES, f"{len(top)} modules directly in tlkit/ ({top}): put them in a package"


def test_no_module_is_too_long():
    long = {
        p.relative_to(ROOT).as_posix(): n for p in _modules() if (n := p.read_text().count("\n")) > MAX_MODULE_LINES
    }
    assert long == {}, f"split these modules (over {MAX_MODULE_LINES} lines): {long}"


def test_every_package_is_on_the_design_map_and_in_pyproject():
    design = DESIGN.read_text(encoding="utf-8")
    packages = sorted(_dotted(p) for p in PACKAGE.rglob("__init__.py") if "__pycache__" not in p.parts)
    listed = set(re.findall(r"`(tlkit/[\w/]*)`", design))
    missing = [p for p in packages if p.replace(".", "/") + "/" not in listed and p != "tlkit"]
    assert missing == [], f"add one line for each of these packages to docs/design.md: {missing}"
    top = sorted(p.relative_to(ROOT).as_posix() for p in PACKAGE.glob("*.py"))
    unlisted = [m for m in top if f"`{m}`" not in design]
    assert unlisted == [], f"add these top-level modules to docs/design.md: {unlisted}"
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    assert [p for p in packages if p not in declared] == [], "list every package in pyproject.toml"


def test_the_api_is_a_thin_facade():
    lines = (PACKAGE / "api.py").read_text(encoding="utf-8").count("\n")
    assert lines <= 200, f"tlkit/api.py has {lines} lines; move logic into the module that owns it"


@pytest.mark.parametrize("public", ["tlkit", "tlkit.api", "tlkit.testing", "tlkit.bases", "tlkit.weights"])
def test_the_public_modules_import(public):
    __import__(public)


def test_no_package_shadows_a_public_name():
    # Importing tlkit.X.y sets the attribute tlkit.X to the package, hiding an API function of that name.
    import tlkit

    packages = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    public = set(tlkit.__all__)
    assert packages & public == set(), "rename these packages: they shadow tlkit's public names"
