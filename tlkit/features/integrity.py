"""Is a cache entry's features file still what was written?  Checked cheaply on every hit, fully on demand.

Hashing a whole entry on every hit costs ~0.3 s per 250 MB — minutes per run at 100 k images.
So :func:`seal` records, next to the full SHA-256, the file's size, its modification time and
the hash of a sample of fixed chunks (the first, the last and evenly spaced ones: ~2 MB read
whatever the size), and :func:`quick_ok` checks those on a hit.  Truncation, a rewrite or an
edit (which moves the mtime) and damage inside a sampled chunk are caught in milliseconds;
:func:`full_ok` rereads everything and is what ``tlkit cache verify`` runs.

The first hit after a reboot checks fully, once: a machine that crashed may have lost writes
the entry's mtime does not show.  The entry's ``verified-<boot id>`` stamp records that.  So does
the first hit on a cache copied without its mtimes (``cp -r``): ``verified-mtime-<ns>`` records
that the file with that new mtime was checked whole, and later hits are quick again.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from tlkit.io.hashing import sha256_file

SAMPLE_CHUNKS = 32  # chunks hashed on a hit: ~2 MB read, a few ms, however large the entry
CHUNK = 1 << 16
_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
_STAMP = "verified-"  # + boot id: this entry was fully verified since that boot
_MOVED = "verified-mtime-"  # + mtime (ns): the features file, copied with a new mtime, was fully verified


def boot_id() -> str:
    """This boot's id (Linux), "" where the system does not say."""
    try:
        return _BOOT_ID.read_text().strip()
    except OSError:
        return ""


def sample_sha256(path: Path, size: int) -> str:
    """SHA-256 of the file's size and its sampled chunks (all of it when small)."""
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as handle:
        if size <= SAMPLE_CHUNKS * CHUNK:
            digest.update(handle.read())
            return digest.hexdigest()
        step = (size - CHUNK) / (SAMPLE_CHUNKS - 1)
        for index in range(SAMPLE_CHUNKS):
            handle.seek(int(index * step))
            digest.update(handle.read(CHUNK))
    return digest.hexdigest()


def seal(path: Path, digest: str | None = None) -> dict[str, Any]:
    """The metadata fields that let a later open check ``path``: full and sampled hashes, size, mtime, boot."""
    stat = path.stat()
    return {
        "sha256": digest or sha256_file(path),
        "sample_sha256": sample_sha256(path, stat.st_size),
        "data_mtime_ns": stat.st_mtime_ns,
        "boot_id": boot_id(),
    }


def quick_ok(path: Path, meta: dict[str, Any]) -> bool:
    """True when ``path`` still has the size, mtime and sampled chunks ``meta`` recorded.

    An entry from before these fields, or the first hit after a reboot, is checked fully instead
    (and stamped, so the next hit is quick again).
    """
    if not meta.get("sha256"):
        return False  # an entry from before checksums: never trusted
    stat = path.stat()
    moved = path.parent / f"{_MOVED}{stat.st_mtime_ns}"  # a copy's new mtime, once fully verified
    sealed = meta.get("sample_sha256") and (meta.get("data_mtime_ns") == stat.st_mtime_ns or moved.exists())
    if not sealed:
        if not full_ok(path, meta):
            return False
        if meta.get("sample_sha256"):
            _touch(moved)  # copied without its mtime (`cp -r`): whole once, then quick again
        return True
    if sample_sha256(path, stat.st_size) != meta["sample_sha256"]:
        return False
    booted = boot_id()
    if booted and booted != meta.get("boot_id") and not (path.parent / f"{_STAMP}{booted}").exists():
        if not full_ok(path, meta):
            return False
        _touch(path.parent / f"{_STAMP}{booted}")
    return True


def _touch(stamp: Path) -> None:
    """Leave ``stamp`` (a read-only cache keeps none: it is verified in full again next time, still correct)."""
    try:
        stamp.touch()
    except OSError:
        pass


def full_ok(path: Path, meta: dict[str, Any]) -> bool:
    """True when the whole file's SHA-256 is the one ``meta`` recorded."""
    return bool(meta.get("sha256")) and meta.get("sha256") == sha256_file(path)


__all__ = ["SAMPLE_CHUNKS", "boot_id", "full_ok", "quick_ok", "sample_sha256", "seal"]
