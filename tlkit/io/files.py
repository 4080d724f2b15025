"""Atomic writes: a file appears whole or not at all, a folder is published complete, never over earlier output.

A folder built before it is renamed into place (:func:`building_folder`) is locked by its writer, so
a killed writer's leftover can be told from one still being written and removed
(:func:`remove_abandoned`).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tlkit.errors import TlkitError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no flock; leftovers wait for an explicit clean-up
    fcntl = None  # type: ignore[assignment]


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


@contextmanager
def building_folder(parent: Path, prefix: str) -> Iterator[Path]:
    """A new private folder ``parent/<prefix>*`` to build output in; removed on exit unless renamed away.

    The process holds an exclusive ``flock`` on the folder while it exists (the kernel drops it
    however the process ends, SIGKILL included), which is how :func:`remove_abandoned` tells a
    folder being written from a dead writer's leftover.  Where the file system has no such locks
    the folder is simply not locked (and never removed as abandoned).
    """
    while True:
        tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
        held = _hold(tmp, wait=True)
        if tmp.is_dir():
            break
        if held is not None:  # removed as abandoned between mkdtemp and the lock: make another
            os.close(held)
    try:
        yield tmp
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        if held is not None:
            os.close(held)


#: A staging folder nobody holds and in which nothing changed for this long is a dead writer's.
ABANDONED_AFTER_S = 600.0


@contextmanager
def staging_folder(target: Path) -> Iterator[Path]:
    """A hidden folder ``.<name>.tmp-*`` next to ``target`` to build it in, for :func:`publish_folder`.

    It is a :func:`building_folder` (removed on exit unless renamed into place); first, what a
    killed writer of the same name left there is removed (:func:`remove_abandoned`).
    """
    prefix = f".{target.name}.tmp-"
    remove_abandoned(target.parent, prefix, idle=ABANDONED_AFTER_S)
    with building_folder(target.parent, prefix) as tmp:
        yield tmp


def remove_abandoned(parent: Path, prefix: str, *, idle: float = 0.0) -> int:
    """Delete the folders ``parent/<prefix>*`` that no living process holds (see :func:`building_folder`)
    and in which nothing changed for ``idle`` seconds: what a killed or crashed writer left.

    ``idle`` guards a folder shared between machines whose locks are local to each (an NFS
    mount with ``local_lock=flock`` or ``nolock``): a live writer there keeps its files changing.
    Return how many folders were removed.
    """
    try:
        leftovers = [p for p in parent.iterdir() if p.name.startswith(prefix)]
    except OSError:
        return 0
    removed = 0
    now = time.time()
    for path in leftovers:
        if path.is_symlink() or not path.is_dir() or now - _last_change(path) < idle:
            continue
        held = _hold(path, wait=False)
        if held is None:  # being written (or a file system without locks)
            continue
        try:
            shutil.rmtree(path, ignore_errors=True)
            removed += 1
        finally:
            os.close(held)
    return removed


def _last_change(folder: Path) -> float:
    """The newest mtime of ``folder`` and the files in it (now, when it cannot be read)."""
    try:
        return max([folder.stat().st_mtime] + [p.stat().st_mtime for p in folder.iterdir()])
    except OSError:
        return time.time()


def _hold(folder: Path, *, wait: bool) -> int | None:
    """An open descriptor of ``folder`` holding its exclusive lock; None when it is gone, locked
    by another process (``wait=False``) or the file system has no locks."""
    if fcntl is None:
        return None
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def read_json_object(path: Path) -> dict[str, Any] | None:
    """A JSON object from ``path``; None when the file is absent or holds something else."""
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise TlkitError(f"cannot read {path}: {exc}") from exc
    return value if isinstance(value, dict) else None


__all__ = [
    "atomic_path",
    "building_folder",
    "publish_folder",
    "read_json_object",
    "remove_abandoned",
    "write_json",
    "write_text",
]
