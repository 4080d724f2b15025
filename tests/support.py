"""Helpers shared by the tests (imported as ``tests.support``; fixtures live in conftest.py)."""

from __future__ import annotations

import ast
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from tlkit.testing import write_images

__all__ = [
    "CHROMIUM",
    "CLASS_COLORS",
    "NEEDS_CHROMIUM",
    "chromium",
    "CLI_FAST",
    "FAST",
    "TLKIT",
    "default_signals",
    "docstring_nodes",
    "invoke_tlkit",
    "make_plugin_dist",
    "run_tlkit",
    "snapshot",
    "write_images",
]

#: The fastest options that still train a real model: random MobileNetV2 at 32 px, batches of 8.
FAST = {"base": "mobilenet_v2", "weights": "none", "image_size": 32, "batch_size": 8}
#: The same options on the command line.
CLI_FAST = ["--base", "mobilenet_v2", "--weights", "none", "--image-size", "32", "--batch-size", "8"]

BIN = Path(sys.executable).parent
TLKIT = str(BIN / "tlkit")


CLASS_COLORS = {"cat": (200, 40, 40), "dog": (40, 200, 40), "fox": (40, 40, 200)}


def snapshot(folder: Path) -> dict[str, float]:
    """Every file under ``folder`` with its mtime: to prove nothing was written there."""
    return {str(p.relative_to(folder)): p.stat().st_mtime for p in sorted(folder.rglob("*"))}


def make_plugin_dist(
    root: Path, dist: str, version: str, modules: dict[str, str], entry_points: dict[str, str]
) -> Path:
    """An installed-looking plugin distribution under ``root`` (put ``root`` on sys.path/PYTHONPATH)."""
    root.mkdir(parents=True, exist_ok=True)
    for name, source in modules.items():
        (root / f"{name}.py").write_text(textwrap.dedent(source))
    info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    lines = ["[tlkit]"] + [f"{name} = {target}" for name, target in entry_points.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    return root


def invoke_tlkit(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run ``tlkit ARGS`` in this process with Typer's CliRunner (no interpreter or TensorFlow
    start-up), as a CompletedProcess like :func:`run_tlkit`'s.

    Use it wherever a real process is not the point (signals, determinism across processes and
    "does not import TensorFlow" checks need :func:`run_tlkit`).  Output is 200 columns wide
    whatever the caller's terminal.
    """
    from typer.testing import CliRunner

    from tlkit.cli import app

    result = CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200", **(env or {})})
    return subprocess.CompletedProcess([TLKIT, *map(str, args)], result.exit_code, result.stdout, result.stderr)


def default_signals() -> None:
    """``preexec_fn`` for a tlkit child that must react to SIGINT/SIGTERM.

    A background job of a non-interactive shell inherits SIGINT as *ignored*, and Python
    then installs no KeyboardInterrupt handler; the child gets the default back, so signal
    tests pass from a terminal, a background job, nohup and CI alike.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def run_tlkit(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 600
) -> subprocess.CompletedProcess:
    """Run the installed ``tlkit`` console script."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run([TLKIT, *args], capture_output=True, text=True, env=full_env, cwd=cwd, timeout=timeout)


CHROMIUM = "/usr/bin/chromium"
#: Skip a test that needs the real browser where Debian's chromium is not installed.
NEEDS_CHROMIUM = "needs Debian's chromium for the headless-browser check: apt-get install -y chromium"


def chromium(*args: str, tmp: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run headless Chromium (no network, a fresh profile under ``tmp``) with ``args``."""
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        f"--user-data-dir={tmp / 'chromium-profile'}",
        *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def docstring_nodes(tree: ast.AST) -> set[int]:
    """``id()`` of every docstring constant in ``tree`` (the AST layout checks pass over docstrings)."""
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
