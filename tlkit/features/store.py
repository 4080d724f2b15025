"""The feature store: the one owner of the frozen-base feature cache on disk.

While the base is frozen its output for an image never changes, so tlkit runs the base once
per image and keeps the features in a memory-mapped file under the user cache
(``$TLKIT_CACHE_DIR``, default ``~/.cache/tlkit``).  :class:`FeatureStore` is the only code
that knows the cache's layout::

    <root>/features/<key>/features.<dtype>   the features, (views, images, *feature_shape)
    <root>/features/<key>/meta.json         shape, dtype, SHA-256 of the features, provenance
    <root>/features/.tmp-<key>-*/           an entry being written (renamed into place when complete)
    <root>/onnx/<name>.onnx                 frozen bases exported for ONNX Runtime

Entries are built in a temporary folder and renamed into place, so a crashed run never leaves
a half entry in use; the writer holds a lock on that folder, so a later write removes what a
killed run left there (:func:`tlkit.io.files.remove_abandoned`, after ten minutes unchanged).  Every open checks the
features' size, mtime and a sample of their chunks against ``meta.json``
(:mod:`tlkit.features.integrity`; the whole SHA-256 with :meth:`FeatureStore.verify`,
``tlkit cache verify``, and on the first hit after a reboot), so a damaged entry is a miss
(recomputed), never an error.  What keys an entry is
:mod:`tlkit.features.fingerprint`'s and :mod:`tlkit.features.plan`'s business.

Per-image reuse: an entry of one clean view records in ``meta.json`` its *family* (the key of
everything that determines one image's features except which images: base, size, weights,
preprocessing, pooling, dtype, engine, version) and its images' content hashes in row order
(``file_hashes``).  A missing entry whose images are all in verified entries of its family is
assembled from their rows (:meth:`FeatureStore.lookup`, no base pass); one whose images are
partly there has only the others computed (:meth:`FeatureStore.load_or_compute`).  Entries
from before these fields simply take no part.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tlkit.errors import TlkitError
from tlkit.features.integrity import full_ok, quick_ok, seal
from tlkit.features.memory import release_pages
from tlkit.features.rows import Sources, gather_into, run_engine_into
from tlkit.io.files import building_folder, remove_abandoned

CACHE_ENV = "TLKIT_CACHE_DIR"
FEATURE_DTYPES = ("float32", "float16")  # how cache entries may store features


def cache_root() -> Path:
    """``$TLKIT_CACHE_DIR``, else ``$XDG_CACHE_HOME/tlkit``, else ``~/.cache/tlkit``."""
    explicit = os.environ.get(CACHE_ENV)
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "tlkit"


@dataclass
class FeatureSet:
    """Cached features of one split: ``features[view, i]`` belongs to ``labels[i]``."""

    features: np.ndarray  # memmap (views, N, *feature_shape), float32 or float16
    labels: np.ndarray
    key: str
    path: Path  # the entry's folder
    hit: bool  # True when read from the cache, False when computed now
    seconds: float  # time spent computing (0 on a hit)
    derived_from: int = 0  # entries whose rows it was assembled from (0: computed whole, or an old entry)
    computed_images: int | None = None  # images that went through the base now (None: all of them, or a hit)

    @property
    def views(self) -> int:
        return int(self.features.shape[0])


class FeatureStore:
    """The feature cache under ``root`` (default :func:`cache_root`): entries by key, and exported bases.

    An entry is an array of features (``(views, images, *feature_shape)``, float32 or float16)
    and its metadata, published atomically and verified (SHA-256) on every open.  Several
    processes may share one store (multi-worker runs): publishing an entry another process
    published first keeps theirs.
    """

    _ENTRIES = "features"  # folder of the feature entries
    _MODELS = "onnx"  # folder of the exported bases
    _META = "meta.json"
    _DATA_PREFIX = "features."  # + dtype name: features.float32, features.float16
    _TMP_PREFIX = ".tmp-"  # + key: entries being written (never listed, never opened)
    _FAMILY = "family"  # meta: the key of what determines one image's features (not which images)
    _HASHES = "file_hashes"  # meta: the images' content hashes, in row order
    _DERIVED = "derived_from"  # meta: the entries whose rows were reused
    _COMPUTED = "computed_images"  # meta: how many images went through the base for this entry
    _GATHER_BYTES = 32 << 20  # rows copied per chunk when assembling an entry from others
    _ABANDONED_AFTER = 600.0  # seconds unchanged before an unlocked .tmp- folder is a killed writer's leftover

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = cache_root() if root is None else Path(root).expanduser()

    def __repr__(self) -> str:
        return f"FeatureStore({str(self.root)!r})"

    # -- layout ----------------------------------------------------------------

    @property
    def entries_dir(self) -> Path:
        """The folder holding one sub-folder per entry."""
        return self.root / self._ENTRIES

    @property
    def models_dir(self) -> Path:
        """The folder holding the bases exported to ONNX (see :meth:`model_path`)."""
        return self.root / self._MODELS

    def entry_path(self, key: str) -> Path:
        """The folder of entry ``key`` (whether or not it exists)."""
        return self.entries_dir / key

    @classmethod
    def data_name(cls, dtype: str | np.dtype) -> str:
        """The file name of an entry's features stored as ``dtype`` (``features.float32``, ``features.float16``)."""
        return cls._DATA_PREFIX + np.dtype(dtype).name

    def data_path(self, key: str, dtype: str | np.dtype = "float32") -> Path:
        """The features file of entry ``key`` when stored as ``dtype``."""
        return self.entry_path(key) / self.data_name(dtype)

    def meta_path(self, key: str) -> Path:
        """The metadata file of entry ``key``."""
        return self.entry_path(key) / self._META

    def meta(self, key: str) -> dict[str, Any] | None:
        """Entry ``key``'s metadata as written, or None when it is missing or not a JSON object (unverified)."""
        try:
            meta = json.loads(self.meta_path(key).read_text())
        except (OSError, ValueError):
            return None
        return meta if isinstance(meta, dict) else None

    @staticmethod
    def part_key(key: str, index: int, count: int) -> str:
        """The key of worker ``index``'s part (of ``count``) of entry ``key`` (see :mod:`tlkit.features.shards`)."""
        return f"{key}-part{index}of{count}"

    def model_path(self, name: str) -> Path:
        """Where the exported base ``name`` (a file name, e.g. ``mobilenet_v2-224-….onnx``) is kept."""
        return self.models_dir / name

    @staticmethod
    def decision_path(model_path: Path) -> Path:
        """Where ``--engine auto``'s choice for the exported base ``model_path`` is kept
        (:mod:`tlkit.features.engines`): hidden beside it, so not an entry, and cleared with the cache."""
        return model_path.with_name(f".{model_path.name}.engine.json")

    # -- reading -----------------------------------------------------------------

    def lookup(
        self,
        key: str,
        *,
        verify: bool = True,
        pooled_from: str | None = None,
        pooling: str | None = None,
        describe: dict[str, Any] | None = None,
        family: str | None = None,
        hashes: list[str] | None = None,
    ) -> np.ndarray | None:
        """Entry ``key``'s features (read-only memmap), or None when it is missing, incomplete or damaged.

        A truncated or edited features file (size, mtime or sampled chunks not those in its
        metadata; :func:`tlkit.features.integrity.quick_ok`), metadata that is not the JSON tlkit
        wrote, or an entry from before checksums: all are misses, never errors — the cache is a
        cache.  ``verify=False`` skips the check for an entry this process has just written.

        ``pooled_from``: the key of the same images' feature *map* (views, N, h, w, C).  When
        ``key`` is missing and that map is cached, the entry is made from it — reduced over its
        h×w positions with ``pooling`` (``"avg"`` or ``"max"``, what a pooling head's own layer
        does) — published with ``describe`` as its metadata, and returned; no base runs.

        ``family`` and ``hashes`` (the images' content hashes, in order): entry ``key`` holds one
        clean view of these images, and images' features are the same in every entry of
        ``family``.  Both are recorded in an entry made here, and when ``key`` is missing but
        every image is in verified entries of ``family``, the entry is assembled from their rows
        (chunk by chunk), published and returned; no base runs.
        """
        found = self._open(key, verify=verify)
        if found is not None:
            return found
        describe = {**(describe or {}), **self.family_fields(family, hashes)}
        if pooled_from is not None:
            feature_map = self._open(pooled_from)
            if feature_map is not None and feature_map.ndim == 5:
                reduce = np.mean if pooling == "avg" else np.max
                pooled = np.stack([reduce(np.asarray(view, dtype=np.float32), axis=(1, 2)) for view in feature_map])
                self.publish(key, pooled.astype(feature_map.dtype), {**describe, "pooled_from": pooled_from})
                return self._open(key)
        if family is None or not hashes:
            return None
        sources = self._family_rows(family, hashes)
        if len(sources.found) < len(set(hashes)):
            return None  # some images were never computed under this family: run_features computes them
        self._assemble(key, hashes, sources, describe=describe)
        return self._open(key, verify=False)  # just written and hashed

    @classmethod
    def family_fields(cls, family: str | None, hashes: list[str] | None) -> dict[str, Any]:
        """The metadata that lets an entry's rows be reused by entries of the same ``family`` ({} without one)."""
        if family is None or hashes is None:
            return {}
        return {cls._FAMILY: family, cls._HASHES: list(hashes)}

    def _family_rows(
        self,
        family: str,
        hashes: list[str],
        *,
        dtype: str | None = None,
        feature_shape: tuple[int, ...] | None = None,
    ) -> Sources:
        """Where each of ``hashes`` is in verified entries of ``family``: ``hash → (entry, row)``.

        Reads every entry's ``meta.json`` (cheap for hundreds of entries), then takes entries
        greedily — the one holding most of the images still missing first — and verifies each
        (size and SHA-256) before using it; a damaged one is skipped.  All rows found share one
        dtype and feature shape (``dtype`` and ``feature_shape`` when given).
        """
        wanted = set(hashes)
        candidates: dict[str, list[str]] = {}
        if self.entries_dir.is_dir():
            for path in self.entries_dir.iterdir():
                if path.name.startswith(".") or not path.is_dir():
                    continue
                meta = self.meta(path.name)
                if meta is None or meta.get(self._FAMILY) != family:
                    continue
                rows, shape = meta.get(self._HASHES), meta.get("shape")
                if (
                    isinstance(rows, list)
                    and isinstance(shape, list)
                    and len(shape) >= 2
                    and shape[:2] == [1, len(rows)]
                    and all(isinstance(h, str) for h in rows)
                    and not wanted.isdisjoint(rows)
                ):
                    candidates[path.name] = rows
        sources = Sources()
        missing = set(wanted)
        while missing and candidates:
            name = max(sorted(candidates), key=lambda n: len(missing.intersection(candidates[n])))
            rows = candidates.pop(name)
            if missing.isdisjoint(rows):
                break
            data = self._open(name)
            if data is None or data.ndim < 2 or data.shape[:2] != (1, len(rows)):
                continue
            if (dtype is not None and data.dtype != np.dtype(dtype)) or (
                feature_shape is not None and tuple(data.shape[2:]) != tuple(feature_shape)
            ):
                continue
            if sources.arrays and (data.dtype != sources.dtype or data.shape[2:] != sources.feature_shape):
                continue
            sources.arrays[name] = data
            for row, digest in enumerate(rows):
                if digest in missing:
                    sources.found[digest] = (name, row)
            missing.difference_update(rows)
        return sources

    def _assemble(
        self,
        key: str,
        hashes: list[str],
        sources: Sources,
        *,
        describe: dict[str, Any],
        pixels: np.ndarray | None = None,
        engine: Any = None,
        batch_size: int = 32,
        progress: Callable[[int], None] | None = None,
        dtype: str | None = None,
        feature_shape: tuple[int, ...] | None = None,
    ) -> float:
        """Publish entry ``key`` (one clean view of the images ``hashes``): rows found in ``sources``
        are copied, the others computed by ``engine`` from their ``pixels``; return the seconds."""
        dtype = dtype or sources.dtype.name
        feature_shape = tuple(feature_shape if feature_shape is not None else sources.feature_shape)
        shape = (1, len(hashes), *feature_shape)
        with self._building(key) as tmp:
            started = time.perf_counter()
            try:
                with open(tmp / self.data_name(dtype), "wb") as out:
                    digest, computed = gather_into(
                        out,
                        shape,
                        dtype,
                        hashes,
                        sources,
                        pixels=pixels,
                        engine=engine,
                        batch_size=batch_size,
                        progress=progress,
                        chunk=max(1, self._GATHER_BYTES // max(1, np.dtype(dtype).itemsize * math.prod(feature_shape))),
                    )
            except OSError as exc:
                raise TlkitError(
                    f"cannot write the feature cache in {self.entries_dir} ({exc.strerror or exc}); free some "
                    f"space, set {CACHE_ENV} to another folder or train with --no-feature-cache"
                ) from None
            for array in sources.arrays.values():
                release_pages(array)
            if pixels is not None:
                release_pages(pixels)
            seconds = time.perf_counter() - started
            meta = {
                "shape": list(shape),
                "dtype": dtype,
                "seconds": round(seconds, 3),
                **describe,
                self._DERIVED: sorted({name for name, _ in sources.found.values()}),
                self._COMPUTED: computed,
            }
            if engine is not None:
                meta.setdefault("engine", getattr(engine, "name", "?"))
            self._commit(tmp, key, meta, digest=digest)
        return seconds

    def verify(self, key: str) -> bool:
        """True when entry ``key`` is complete and its whole features file matches its SHA-256."""
        return self._open(key, verify="full") is not None

    def _open(self, key: str, *, verify: bool | str = True) -> np.ndarray | None:
        """Entry ``key``'s features, checked ``verify``: True (quick), ``"full"`` or False (just written)."""
        meta_path = self.meta_path(key)
        if not meta_path.is_file():
            return None
        try:
            meta = json.loads(meta_path.read_text())
            if not isinstance(meta, dict) or meta.get("key") != key or meta.get("complete") is not True:
                return None
            shape = tuple(int(n) for n in meta["shape"])
            if not shape or min(shape) < 0:
                return None
            dtype = np.dtype(meta.get("dtype", "float32"))
            if dtype.name not in FEATURE_DTYPES:
                return None
            data = self.data_path(key, dtype)
            if data.stat().st_size != dtype.itemsize * math.prod(shape):
                return None
            if verify and not (full_ok(data, meta) if verify == "full" else quick_ok(data, meta)):
                return None
            return np.memmap(data, dtype=dtype, mode="r", shape=shape)
        except (OSError, ValueError, KeyError, TypeError):
            return None

    # -- writing -------------------------------------------------------------------

    def load_or_compute(
        self,
        *,
        key: str,
        pixels: np.ndarray,
        labels: np.ndarray,
        feature_shape: tuple[int, ...],
        engine: Any,
        batch_size: int = 32,
        views: int = 1,
        augment: Callable[[np.ndarray, int], np.ndarray] | None = None,
        progress: Callable[[int], None] | None = None,
        describe: dict[str, Any] | None = None,
        dtype: str = "float32",
        family: str | None = None,
        hashes: list[str] | None = None,
    ) -> FeatureSet:
        """The features of ``pixels`` under ``key``: from the store, or computed once and stored on a miss.

        ``pixels`` is the decoded uint8 split (read batch by batch, never whole); ``engine``
        (``engine(float32 batch) -> features``) runs only on a miss; the features are stored as
        ``dtype`` (float32, or float16 at half the size).  With ``augment(batch, view)`` every
        view is an augmented copy (one per epoch in training); without it there is one clean
        view.  ``progress(n)`` is called with the number of images just done.

        ``family`` and ``hashes`` (the images' content hashes, in order; one clean view only):
        recorded in the entry, and on a miss the images already in verified entries of
        ``family`` are copied from there — only the others go through ``engine``.
        """
        path = self.entry_path(key)
        cached = self._open(key)
        if cached is not None:
            return FeatureSet(cached, labels, key, path, hit=True, seconds=0.0)
        describe = {**(describe or {}), **self.family_fields(family, hashes)}
        if family is not None and hashes and views == 1 and augment is None and len(hashes) == len(pixels):
            sources = self._family_rows(family, hashes, dtype=dtype, feature_shape=feature_shape)
            if sources.found:
                seconds = self._assemble(
                    key,
                    hashes,
                    sources,
                    describe=describe,
                    pixels=pixels,
                    engine=engine,
                    batch_size=batch_size,
                    progress=progress,
                    dtype=dtype,
                    feature_shape=feature_shape,
                )
                features = self._just_written(key)
                computed = len(hashes) - sum(1 for h in hashes if h in sources.found)
                derived = len(set(name for name, _ in sources.found.values()))
                return FeatureSet(features, labels, key, path, False, seconds, derived, computed)
        seconds = self.compute(
            key=key,
            pixels=pixels,
            feature_shape=feature_shape,
            engine=engine,
            batch_size=batch_size,
            views=views,
            augment=augment,
            progress=progress,
            describe=describe,
            dtype=dtype,
        )
        return FeatureSet(self._just_written(key), labels, key, path, hit=False, seconds=seconds)

    def _just_written(self, key: str) -> np.ndarray:
        """Entry ``key``'s features, just published (and checked) by this process."""
        features = self._open(key, verify=False)
        if features is None:  # pragma: no cover - the entry was removed under us
            raise TlkitError(f"feature cache entry {self.entry_path(key)} vanished while in use; rerun")
        return features

    def compute(
        self,
        *,
        key: str,
        pixels: np.ndarray,
        feature_shape: tuple[int, ...],
        engine: Any,
        batch_size: int = 32,
        views: int = 1,
        augment: Callable[[np.ndarray, int], np.ndarray] | None = None,
        progress: Callable[[int], None] | None = None,
        describe: dict[str, Any] | None = None,
        dtype: str = "float32",
    ) -> float:
        """Run the engine over ``pixels`` and publish entry ``key`` (atomically); return the seconds.

        The arguments are :meth:`load_or_compute`'s; a multi-worker run's parts
        (:mod:`tlkit.features.shards`) are computed the same way.
        """
        root = self.entries_dir
        shape = (views, len(pixels), *feature_shape)
        with self._building(key) as tmp:
            started = time.perf_counter()
            try:
                with open(tmp / self.data_name(dtype), "wb") as out:
                    digest = run_engine_into(
                        out, shape, dtype, pixels, engine, batch_size=batch_size, augment=augment, progress=progress
                    )
            except OSError as exc:
                raise TlkitError(
                    f"cannot write the feature cache in {root} ({exc.strerror or exc}); free some space, set "
                    f"{CACHE_ENV} to another folder or train with --no-feature-cache"
                ) from None
            # No fsync: the first hit after a reboot checks the whole SHA-256, so an entry torn by a
            # machine crash is a miss.
            release_pages(pixels)
            seconds = time.perf_counter() - started
            meta = {
                "shape": list(shape),
                "dtype": dtype,
                "seconds": round(seconds, 3),
                "engine": getattr(engine, "name", "?"),
                **(describe or {}),
            }
            self._commit(tmp, key, meta, digest=digest)
        return seconds

    def publish(self, key: str, features: np.ndarray, meta: dict[str, Any]) -> None:
        """Write a complete entry ``key`` holding ``features`` (stored in their own dtype) and ``meta``.

        Atomic like every entry: see :meth:`_commit`.
        """
        with self._building(key) as tmp:
            out = np.memmap(tmp / self.data_name(features.dtype), dtype=features.dtype, mode="w+", shape=features.shape)
            out[:] = features
            out.flush()
            del out
            self._commit(tmp, key, {**meta, "shape": list(features.shape), "dtype": features.dtype.name})

    @contextmanager
    def _building(self, key: str) -> Iterator[Path]:
        """A new private folder in which entry ``key`` is built (removed unless :meth:`_commit` renamed it).

        Leftovers of writers that were killed (``.tmp-*`` folders no process holds any more,
        unchanged for ten minutes) are removed first: a killed feature pass may have left
        gigabytes there.
        """
        root = self.entries_dir
        with ExitStack() as stack:
            try:
                root.mkdir(parents=True, exist_ok=True)
                remove_abandoned(root, self._TMP_PREFIX, idle=self._ABANDONED_AFTER)
                tmp = stack.enter_context(building_folder(root, f"{self._TMP_PREFIX}{key}-"))
            except OSError as exc:
                raise TlkitError(
                    f"cannot write the feature cache in {root} ({exc.strerror or exc}); set {CACHE_ENV} to a "
                    f"writable folder or train with --no-feature-cache"
                ) from None
            yield tmp

    def _commit(self, tmp: Path, key: str, meta: dict[str, Any], *, digest: str | None = None) -> None:
        """Finish the entry built in ``tmp`` (its metadata, with the features' seal) and rename it into place.

        ``meta`` must name the features' ``dtype``.  ``digest`` is the features' SHA-256 when the
        writer hashed them as it went (else the file is read back and hashed).  The rename is
        atomic.  When the entry's folder is already taken by a valid entry (another process
        published first) that one stays; a damaged entry or a stray file in the way is replaced.
        """
        path = self.entry_path(key)
        sealed = seal(tmp / self.data_name(meta["dtype"]), digest)
        meta = {**meta, "key": key, "complete": True, "created": time.time(), **sealed}
        (tmp / self._META).write_text(json.dumps(meta, indent=2))
        for _ in range(3):
            try:
                os.rename(tmp, path)
                return
            except OSError:
                if self._open(key) is not None:
                    return  # another process published it first: its entry stays, ours is dropped
                # Damaged or a stray file: replace it.  Another writer may do the same and land its
                # entry between this removal and the rename: the next round then finds it valid.
                self.remove(key)
        os.rename(tmp, path)  # still in the way: the error names the path

    def remove(self, key: str) -> None:
        """Delete entry ``key`` (nothing when it is not there)."""
        path = self.entry_path(key)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)

    # -- management ----------------------------------------------------------------

    def _folders(self) -> tuple[tuple[str, Path], ...]:
        """``(kind, folder)`` of what the store holds: feature entries, exported bases."""
        return (("features", self.entries_dir), ("onnx", self.models_dir))

    def entries(self) -> list[dict[str, Any]]:
        """Every entry and exported base in the store: ``kind``, ``name``, ``path``, ``bytes`` and its metadata.

        Entries being written (or left by a crashed run) are not listed; a listed entry is not
        verified (see :meth:`verify`); its images' hashes are left out (see :meth:`meta`).
        """
        found = []
        for kind, folder in self._folders():
            if not folder.is_dir():
                continue
            for path in sorted(folder.iterdir()):
                if path.name.startswith("."):
                    continue
                meta = (self.meta(path.name) or {}) if kind == "features" and path.is_dir() else {}
                meta.pop(self._HASHES, None)  # one hash per image: in meta.json, too long to list
                found.append({"kind": kind, "name": path.name, "path": str(path), "bytes": _size(path), **meta})
        return found

    def clear(self) -> tuple[int, int]:
        """Delete every entry and exported base (and leftovers of crashed runs); return (entries, bytes) freed."""
        entries, freed = 0, 0
        for _, folder in self._folders():
            if not folder.is_dir():
                continue
            for path in folder.iterdir():
                size = _size(path)
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
                entries += 0 if path.name.startswith(".") else 1
                freed += size
        return entries, freed


def _size(path: Path) -> int:
    """Bytes of a file, or of the files under a folder."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


__all__ = ["CACHE_ENV", "FEATURE_DTYPES", "FeatureSet", "FeatureStore", "cache_root"]
