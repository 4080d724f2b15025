"""Real ``tlkit`` processes for the chaos tests: start one, wait (bounded) for a moment it reaches
on disk, SIGKILL it there.  No mocks and no hooks in tlkit: the tests watch the files a phase
writes (a ``.tmp-*`` cache folder, an export's staging folder, ``state.json``) and kill then."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest

from tests.support import TLKIT, default_signals

T = TypeVar("T")


@dataclass
class Child:
    """A running ``tlkit`` process whose stdout/stderr go to files (a full pipe never blocks it)."""

    name: str
    process: subprocess.Popen
    stdout_path: Path
    stderr_path: Path

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text(encoding="utf-8", errors="replace")

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def describe(self) -> str:
        """The child's exit status and the end of what it printed, for a failure message."""
        return f"{self.name} (exit {self.process.poll()}):\n{self.stdout[-1500:]}\n{self.stderr[-3000:]}"

    def kill(self) -> None:
        """SIGKILL it now (no handler runs) and reap it."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=60)

    def finish(self, timeout: float) -> int:
        """Its exit status; killed (and the test failed) when it takes longer than ``timeout`` seconds."""
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"{self.name} did not finish within {timeout:.0f} s; killed. {self.describe()}")


class Spawner:
    """Starts children for one test and kills whatever is still running when the test ends."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.children: list[Child] = []

    def __call__(self, *args: str | Path, name: str = "tlkit", env: dict[str, str] | None = None) -> Child:
        self.folder.mkdir(parents=True, exist_ok=True)
        index = len(self.children)
        out, err = self.folder / f"{index}-{name}.out", self.folder / f"{index}-{name}.err"
        with open(out, "w") as stdout, open(err, "w") as stderr:
            process = subprocess.Popen(
                [TLKIT, *map(str, args)],
                stdout=stdout,
                stderr=stderr,
                env={**os.environ, **(env or {})},
                preexec_fn=default_signals,
            )
        child = Child(name, process, out, err)
        self.children.append(child)
        return child

    def kill_all(self) -> None:
        for child in self.children:
            child.kill()


def wait_until(condition: Callable[[], T | None], children: Sequence[Child], timeout: float, what: str) -> T:
    """Poll ``condition`` every few milliseconds until it returns something true, and return that.

    Fails the test (killing the children) when ``timeout`` seconds pass first, or when a child
    exits first: then the moment to kill it at never came, and the test must not pass without it.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        for child in children:
            if child.process.poll() is not None:
                pytest.fail(f"{child.name} exited before {what}. {child.describe()}")
        if time.monotonic() > deadline:
            for child in children:
                child.kill()
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}; killed the children")
        time.sleep(0.002)


def entry_names(folder: Path) -> tuple[list[str], list[str]]:
    """(whole entries, ``.tmp-*`` folders being written or left) in a feature store's entries folder."""
    try:
        names = sorted(p.name for p in folder.iterdir())
    except FileNotFoundError:
        return [], []
    return [n for n in names if not n.startswith(".")], [n for n in names if n.startswith(".tmp-")]
