"""Run directories and atomic file writes.

A run directory is never reused: its name carries a timestamp, and a suffix
is added when that name exists.  Every file is written to a temporary name in
the same folder and renamed into place, so a crash never leaves a half file.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


def create_run_dir(output: str | Path, base: str, head: str, *, now: float | None = None) -> Path:
    """Create and return a new, empty ``output/<YYYYmmdd-HHMMSS>-<base>-<head>[-N]`` folder."""
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{stamp}-{base}-{head}")
    for n in range(1, 10_000):
        path = output / (stem if n == 1 else f"{stem}-{n}")
        try:
            path.mkdir()  # atomic: fails if another run took the name
        except FileExistsError:
            continue
        return path
    raise RuntimeError(f"could not find a free run directory name under {output}")


@contextmanager
def atomic_path(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success.

    ``suffix`` is kept at the end of the temporary name for writers that look
    at the extension (Keras wants ``.keras``, matplotlib ``.png``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or path.suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text(path: str | Path, text: str) -> None:
    """Atomically write UTF-8 text."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())


def write_json(path: str | Path, data: Any) -> None:
    """Atomically write pretty JSON."""
    write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")
