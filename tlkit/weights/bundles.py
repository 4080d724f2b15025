"""Offline weight bundles: a folder of weight files plus ``tlkit-weights.json``.

::

    {"format": 1, "created": "...", "tlkit_version": "...",
     "files": [{"base": "resnet50", "plugin": "builtin_bases", "file": "...h5",
                "sha256": "...", "bytes": 94765736}]}

:func:`write_bundle` makes one on a machine with the weights (or internet);
:func:`import_bundle` checks every file's SHA-256 and size and only then copies
them into Keras's cache on an offline machine.  Every file is written to a
temporary name in its folder and renamed into place.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tlkit.errors import TlkitError
from tlkit.io.files import atomic_path, write_json
from tlkit.io.hashing import sha256_file
from tlkit.registry.specs import BaseSpec
from tlkit.version import __version__
from tlkit.weights.local import keras_cache_dir

MANIFEST_NAME = "tlkit-weights.json"
MANIFEST_FORMAT = 1
_CHUNK = 1 << 20

#: Called with the number of bytes just read or copied (drives progress bars).
ProgressFn = Callable[[int], None]


# -- hashing and atomic copies ----------------------------------------------


def _copy_atomically(
    source: Path, target: Path, on_progress: ProgressFn | None = None, expected: str | None = None
) -> tuple[str, int]:
    """Copy ``source`` onto ``target`` through a temporary file; return (sha256, bytes) of what was written.

    With ``expected`` (a SHA-256), a copy with other content never replaces ``target``.
    """
    digest = hashlib.sha256()
    size = 0
    with atomic_path(target, suffix=".part") as tmp:
        with open(source, "rb") as src, open(tmp, "wb") as dst:
            for block in iter(lambda: src.read(_CHUNK), b""):
                dst.write(block)
                digest.update(block)
                size += len(block)
                if on_progress:
                    on_progress(len(block))
            dst.flush()
            os.fsync(dst.fileno())
        if expected is not None and digest.hexdigest() != expected:
            raise TlkitError(
                f"{source} changed while it was being copied (SHA-256 {digest.hexdigest()}, "
                f"expected {expected}); nothing was replaced; run the command again"
            )
        os.chmod(tmp, 0o644)
    return digest.hexdigest(), size


# -- bundles -----------------------------------------------------------------


@dataclass(frozen=True)
class BundleFile:
    """One entry of a bundle's manifest."""

    base: str
    plugin: str
    file: str
    sha256: str
    bytes: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _not_a_bundle(directory: Path, why: str) -> TlkitError:
    return TlkitError(
        f"{directory} is not a weights bundle made by `tlkit weights download --to` ({why}); "
        f"make one with `tlkit weights download BASE... --to DIR` on a machine with the weights"
    )


def _safe_file_name(name: Any) -> bool:
    return (
        isinstance(name, str)
        and name not in ("", ".", "..")
        and "/" not in name
        and "\\" not in name
        and name == Path(name).name
        and not name.startswith(".")
        and name != MANIFEST_NAME
    )


def read_manifest(directory: str | Path) -> tuple[dict[str, Any], list[BundleFile]]:
    """The manifest of the bundle in ``directory`` and its checked entries."""
    directory = Path(directory)
    if not directory.is_dir():
        raise _not_a_bundle(directory, "no such folder" if not directory.exists() else "not a folder")
    path = directory / MANIFEST_NAME
    if not path.is_file():
        raise _not_a_bundle(directory, f"it has no {MANIFEST_NAME}")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _not_a_bundle(directory, f"{MANIFEST_NAME} is not readable JSON: {exc}") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), list):
        raise _not_a_bundle(directory, f"{MANIFEST_NAME} has no 'files' list")
    if manifest.get("format") != MANIFEST_FORMAT:
        raise _not_a_bundle(
            directory,
            f"{MANIFEST_NAME} has format {manifest.get('format')!r}; this tlkit reads format {MANIFEST_FORMAT}",
        )
    entries = []
    for i, item in enumerate(manifest["files"]):
        ok = (
            isinstance(item, dict)
            and isinstance(item.get("base"), str)
            and _safe_file_name(item.get("file"))
            and isinstance(item.get("sha256"), str)
            and len(item["sha256"]) == 64
            and isinstance(item.get("bytes"), int)
            and item["bytes"] >= 0
        )
        if not ok:
            raise _not_a_bundle(
                directory,
                f"entry {i + 1} of {MANIFEST_NAME} needs 'base', a plain 'file' name, "
                f"a 64-hex-digit 'sha256' and 'bytes'",
            )
        entries.append(
            BundleFile(item["base"], str(item.get("plugin", "")), item["file"], item["sha256"].lower(), item["bytes"])
        )
    return manifest, entries


def write_bundle(
    items: Iterable[tuple[BaseSpec, Path]],
    directory: str | Path,
    *,
    on_progress: ProgressFn | None = None,
    on_file: Callable[[str], None] | None = None,
) -> list[BundleFile]:
    """Copy each ``(spec, local weight file)`` into ``directory`` and merge them into its manifest.

    An existing manifest in ``directory`` keeps its other entries (re-running
    with more bases adds them).  Returns the manifest's entries after the merge.
    """
    directory = Path(directory)
    items = list(items)
    if directory.exists() and not directory.is_dir():
        raise TlkitError(f"--to {directory} exists and is not a folder; pick a folder for the bundle")
    existing: dict[str, Any] = {}
    entries: dict[str, BundleFile] = {}
    if (directory / MANIFEST_NAME).exists():
        existing, old = read_manifest(directory)
        entries = {e.base: e for e in old}
    directory.mkdir(parents=True, exist_ok=True)
    for spec, source in items:
        name = Path(source).name
        if on_file:
            on_file(spec.name)
        digest, size = _copy_atomically(Path(source), directory / name, on_progress)
        entries[spec.name] = BundleFile(spec.name, spec.plugin, name, digest, size)
        for base, entry in list(entries.items()):  # one file name, one content
            if entry.file == name and entry.sha256 != digest:
                entries[base] = BundleFile(entry.base, entry.plugin, name, digest, size)
    now = datetime.now(UTC).isoformat(timespec="seconds")
    files = [entries[base] for base in sorted(entries)]
    manifest = {
        "format": MANIFEST_FORMAT,
        "created": existing.get("created", now),
        "tlkit_version": __version__,
        "files": [f.as_dict() for f in files],
    }
    if existing:
        manifest["updated"] = now
    write_json(directory / MANIFEST_NAME, manifest)
    os.chmod(directory / MANIFEST_NAME, 0o644)  # a bundle is meant to be copied and shared
    return files


def bundle_bytes(entries: Iterable[BundleFile]) -> int:
    """Total size of the distinct files among ``entries``."""
    return sum({e.file: e.bytes for e in entries}.values())


def verify_bundle(directory: str | Path, *, on_progress: ProgressFn | None = None) -> list[BundleFile]:
    """Check that every file the manifest lists is there with its size and SHA-256; return the entries."""
    directory = Path(directory)
    _manifest, entries = read_manifest(directory)
    checked: dict[str, str] = {}
    for entry in entries:
        path = directory / entry.file
        if entry.file in checked:
            actual = checked[entry.file]
        else:
            if not path.is_file():
                raise TlkitError(
                    f"bundle {directory} lists {entry.file} (base {entry.base!r}) but the file is "
                    f"missing; nothing was installed; copy the whole bundle folder again"
                )
            actual = sha256_file(path, on_progress)
            checked[entry.file] = actual
        size = path.stat().st_size
        if actual != entry.sha256 or size != entry.bytes:
            raise TlkitError(
                f"bundle file {path} (base {entry.base!r}) is damaged: expected SHA-256 "
                f"{entry.sha256} ({entry.bytes} bytes), got {actual} ({size} bytes); nothing was "
                f"installed; copy the bundle again or re-create it with `tlkit weights download --to`"
            )
    return entries


@dataclass(frozen=True)
class ImportedFile:
    """What :func:`import_bundle` did with one manifest entry."""

    base: str
    file: str
    path: Path
    status: str  # "installed", "already installed" or "replaced"
    bytes: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "base": self.base,
            "file": self.file,
            "path": str(self.path),
            "status": self.status,
            "bytes": self.bytes,
        }


def import_bundle(
    directory: str | Path,
    *,
    force: bool = False,
    on_progress: ProgressFn | None = None,
    on_verified: Callable[[], None] | None = None,
) -> list[ImportedFile]:
    """Verify the bundle in ``directory``, then copy its files into Keras's cache.

    Nothing is installed unless every file's SHA-256 and size match the
    manifest.  A file already in the cache with the same content is left as
    it is ("already installed"); one with other content is refused unless
    ``force`` (then "replaced").
    """
    directory = Path(directory)
    entries = verify_bundle(directory, on_progress=on_progress)
    if on_verified:
        on_verified()
    cache = keras_cache_dir()
    plan: dict[str, str] = {}  # file -> status
    conflicts = []
    for entry in entries:
        if entry.file in plan:
            continue
        target = cache / entry.file
        if target.is_dir():
            raise TlkitError(f"{target} is a folder, so {entry.file} cannot be installed there; move it away")
        if not target.exists():
            plan[entry.file] = "installed"
        elif target.is_file() and target.stat().st_size == entry.bytes and sha256_file(target) == entry.sha256:
            plan[entry.file] = "already installed"
        else:
            plan[entry.file] = "replaced"
            conflicts.append(entry)
    if conflicts and not force:
        listed = ", ".join(f"{e.file} (base {e.base!r})" for e in conflicts)
        raise TlkitError(
            f"{len(conflicts)} file(s) in {cache} differ from the bundle's: {listed}; nothing was "
            f"installed; pass --force to replace them with the bundle's"
        )
    done: set[str] = set()
    for entry in entries:
        if plan[entry.file] == "already installed" or entry.file in done:
            continue
        _copy_atomically(directory / entry.file, cache / entry.file, on_progress, expected=entry.sha256)
        done.add(entry.file)
    return [ImportedFile(e.base, e.file, cache / e.file, plan[e.file], e.bytes) for e in entries]
