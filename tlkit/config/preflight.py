"""Pre-flight checks: refuse a run that cannot finish *before* any time or disk is spent on it.

A run needs room: the decoded pixels go to a temporary ``uint8`` memmap
(N×S×S×3 bytes on disk), the frozen base's activations for one batch live in
memory, the cached features go to the feature cache and the model and its
checkpoints to the run directory.  These functions estimate each from what is
known before the work starts and raise a one-line :class:`TlkitError` giving
the estimate and the limit (available memory, free disk) when it does not fit.
They read only the file system's numbers; nothing here imports TensorFlow.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from pathlib import Path

from tlkit.errors import TlkitError

#: Float32 values a CNN base keeps alive per input pixel while it runs one image (a rough upper
#: bound across the built-in bases: e.g. 32–64 channels at half resolution, a few tensors live).
ACTIVATION_FLOATS_PER_PIXEL = 48
#: What the run directory needs beyond the model and checkpoints: plots, report, history, logs.
RUN_DIR_EXTRA_BYTES = 8 << 20


def human_bytes(count: float) -> str:
    """``1536`` → ``"1.5 KiB"``: sizes as a user reads them."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(count) < 1024 or unit == "PiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} PiB"  # pragma: no cover - the loop always returns


def available_memory() -> int | None:
    """Bytes of memory this process can still use: MemAvailable, capped by a cgroup limit."""
    limits = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                limits.append(int(line.split()[1]) * 1024)
                break
    except (OSError, ValueError, IndexError):
        pass
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 1 << 60:  # "max" or a huge number: no limit
            used = 0
            for usage in ("/sys/fs/cgroup/memory.current", "/sys/fs/cgroup/memory/memory.usage_in_bytes"):
                try:
                    used = int(Path(usage).read_text().strip())
                    break
                except (OSError, ValueError):
                    continue
            limits.append(max(int(text) - used, 0))
        break
    if not limits:
        try:
            return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None
    return min(limits)


def existing_ancestor(path: Path) -> Path:
    """``path`` or its nearest ancestor that exists (what a ``mkdir -p`` would write into)."""
    path = Path(path)
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def free_disk(path: str | Path) -> int | None:
    """Free bytes on the file system that holds (or would hold) ``path``."""
    try:
        return shutil.disk_usage(existing_ancestor(Path(path))).free
    except OSError:
        return None


def check_output(output: str | Path) -> None:
    """``--output`` must be a folder (or a path where one can be made) that this process can write."""
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise TlkitError(f"--output {output} is an existing file, not a folder; pass a folder for the run directories")
    anchor = existing_ancestor(output)
    if anchor != output and not anchor.is_dir():
        raise TlkitError(
            f"--output {output}: {anchor} is a file, so no folder can be made there; pass another --output"
        )
    # os.access honours read-only mounts (EROFS) and permission bits; for root, permission bits
    # do not stop writes, and access() says so too.
    if not os.access(anchor, os.W_OK | os.X_OK):
        raise TlkitError(f"--output {output}: {anchor} is not writable; pass a folder you can write to as --output")


def check_cache_dir(cache_dir: str | Path) -> None:
    """The feature cache must be a folder (or a path where one can be made) that this process can write."""
    cache_dir = Path(cache_dir)
    anchor = existing_ancestor(cache_dir)
    where = f"the feature cache {cache_dir}" + (" (TLKIT_CACHE_DIR)" if os.environ.get("TLKIT_CACHE_DIR") else "")
    advice = "set TLKIT_CACHE_DIR to a writable folder or train with --no-feature-cache"
    if not anchor.is_dir():
        raise TlkitError(f"{where}: {anchor} is a file, not a folder; {advice}")
    if not os.access(anchor, os.W_OK | os.X_OK):
        raise TlkitError(f"{where}: {anchor} is not writable; {advice}")


def _fits(what: str, needed: int, limit: int | None, where: str, advice: str) -> None:
    if limit is not None and needed > limit:
        raise TlkitError(f"{what} needs about {human_bytes(needed)} but only {human_bytes(limit)} {where}; {advice}")


def check_pixels(
    num_images: int,
    image_size: int,
    batch_size: int,
    *,
    workdir: str | Path | None = None,
    memory: int | None = None,
    disk: int | None = None,
) -> None:
    """Refuse an image size whose decoded pixels or one batch's activations cannot fit.

    ``memory``/``disk`` override the measured limits (for tests).
    """
    workdir = Path(workdir) if workdir is not None else Path(tempfile.gettempdir())
    pixels = num_images * image_size * image_size * 3
    advice = "use a smaller --image-size" + (" or --batch-size" if batch_size > 1 else "")
    _fits(
        f"decoding {num_images} images at --image-size {image_size}",
        pixels,
        free_disk(workdir) if disk is None else disk,
        f"is free on disk in {workdir}",
        "use a smaller --image-size or free some space (TMPDIR chooses the folder)",
    )
    per_image = image_size * image_size * (3 + ACTIVATION_FLOATS_PER_PIXEL) * 4
    _fits(
        f"running the base on a batch of {batch_size} at --image-size {image_size}",
        min(batch_size, max(num_images, 1)) * per_image,
        available_memory() if memory is None else memory,
        "of memory is available",
        advice,
    )


def check_run_dir_space(output: str | Path, *, params: int, trainable: int, disk: int | None = None) -> None:
    """Refuse a run whose model, checkpoints and plots cannot fit on ``--output``'s disk."""
    # model.keras (every weight) + last/best checkpoints and Adam's two moments (trainable weights).
    needed = 4 * params + 4 * 4 * trainable + RUN_DIR_EXTRA_BYTES
    _fits(
        "the run directory (model, checkpoints, plots)",
        needed,
        free_disk(output) if disk is None else disk,
        f"is free on disk at {Path(output)}",
        "free some space or pass another --output",
    )


def check_feature_space(
    cache_dir: str | Path, *, num_images: int, views: int, feature_shape: tuple[int, ...], disk: int | None = None
) -> None:
    """Refuse a features run whose cache entries cannot fit on the cache's disk."""
    needed = 4 * num_images * max(views, 1) * math.prod(feature_shape)
    _fits(
        f"caching the base's features for {num_images} images",
        needed,
        free_disk(cache_dir) if disk is None else disk,
        f"is free on disk at {cache_dir}",
        "free some space, set TLKIT_CACHE_DIR to a bigger disk, or train with --no-feature-cache",
    )


__all__ = [
    "available_memory",
    "check_cache_dir",
    "check_feature_space",
    "check_output",
    "check_pixels",
    "check_run_dir_space",
    "existing_ancestor",
    "free_disk",
    "human_bytes",
]
