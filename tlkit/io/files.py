"""Atomic writes: a file appears whole or not at all, a folder is published complete, never over earlier output."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tlkit.errors import TlkitError


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


def publish_folder(tmp: Path, target: Path, *, numbered: bool, taken: str) -> Path:
    """Rename the finished folder ``tmp`` into place, never replacing earlier output.

    The name is reserved with ``mkdir`` (atomic: fails if taken; an existing *empty* folder is
    accepted when the name was the user's), then ``tmp`` is renamed onto it, which replaces an
    empty folder atomically (POSIX): a reader sees either nothing or the complete folder.
    ``numbered`` tries ``target-2``, ``target-3``… when ``target`` is taken; otherwise (or when
    all are taken) ``TlkitError(taken)`` is raised.
    """
    candidates = [target] + ([target.with_name(f"{target.name}-{n}") for n in range(2, 10_000)] if numbered else [])
    for candidate in candidates:
        try:
            candidate.mkdir()
        except FileExistsError:
            if numbered or not (candidate.is_dir() and not any(candidate.iterdir())):
                continue
        os.rename(tmp, candidate)
        return candidate
    raise TlkitError(taken)


def read_json_object(path: Path) -> dict[str, Any] | None:
    """A JSON object from ``path``; None when the file is absent or holds something else."""
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise TlkitError(f"cannot read {path}: {exc}") from exc
    return value if isinstance(value, dict) else None


__all__ = ["atomic_path", "publish_folder", "read_json_object", "write_json", "write_text"]
