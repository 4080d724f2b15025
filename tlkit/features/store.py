"""Frozen-base features: computed once, cached on disk, on the fastest engine available.

While the base is frozen its output for an image never changes, so tlkit runs
the base once per image (ONNX Runtime when installed, TensorFlow otherwise),
keeps the feature maps in a memory-mapped file under the user cache
(``$TLKIT_CACHE_DIR``, default ``~/.cache/tlkit``), and trains the head on
them.  An entry's key covers everything that changes the features: base,
weights fingerprint, input size, preprocessing, each image's content,
augmented views and the tlkit version.  Entries are built in a temporary
folder and renamed into place, so a crashed run never leaves a half entry in use.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tlkit.config.options import ENGINES
from tlkit.errors import TlkitError
from tlkit.io.hashing import sha256_file
from tlkit.io.native import quiet_native

CACHE_ENV = "TLKIT_CACHE_DIR"
FEATURE_DTYPES = ("float32", "float16")  # how cache entries may store features
LARGE_EXPORT_PARAMS = 10_000_000  # above: free tf2onnx's discarded graph copies as it goes (see export_onnx)
_ENTRY_FILE = "features.f32"
_META_FILE = "meta.json"


def cache_root() -> Path:
    """``$TLKIT_CACHE_DIR``, else ``$XDG_CACHE_HOME/tlkit``, else ``~/.cache/tlkit``."""
    explicit = os.environ.get(CACHE_ENV)
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "tlkit"


# -- fingerprints --------------------------------------------------------------


def file_fingerprint(path: str | Path) -> str:
    """Content hash of one image file (what it holds, not where it lives)."""
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def files_fingerprint(paths: Sequence[str | Path], workers: int | None = None) -> str:
    """One hash over the ordered content hashes of ``paths`` (hashed in parallel)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        hashes = list(pool.map(file_fingerprint, paths))
    return hashlib.sha256("\n".join(hashes).encode()).hexdigest()


def weights_fingerprint(model) -> str:
    """Hash of a model's weight values (so random or user weights key the cache correctly)."""
    digest = hashlib.sha256()
    for weight in model.weights:
        value = np.ascontiguousarray(np.asarray(weight))
        digest.update(f"{weight.path}:{value.shape}:{value.dtype}".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def layers_fingerprint(layers: Sequence[Any]) -> str:
    """Hash of the preprocessing layers' configurations."""
    configs = [{"class": type(layer).__name__, "config": layer.get_config()} for layer in layers]
    for config in configs:
        config["config"].pop("name", None)
    return hashlib.sha256(json.dumps(configs, sort_keys=True, default=str).encode()).hexdigest()


# -- engines -------------------------------------------------------------------


class TensorFlowEngine:
    """Runs the feature model as a compiled ``tf.function`` (faster than ``model.predict``)."""

    name = "tensorflow"
    batch_size: int | None = None  # the caller's

    def __init__(self, feature_model) -> None:
        import tensorflow as tf

        self._fn = tf.function(lambda x: feature_model(x, training=False), reduce_retracing=True)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(self._fn(batch), dtype=np.float32)  # float16/bfloat16 under mixed precision


class OnnxRuntimeEngine:
    """Runs the exported feature model with ONNX Runtime on all CPU cores."""

    name = "onnxruntime"
    #: Images per call.  On CPU small batches stay in cache: MobileNetV2 ran 278 / 263 / 249 /
    #: 236 img/s at batch 8 / 16 / 32 / 64 on 2 cores, ResNet50 was flat (bench/ort_throughput.py).
    batch_size: int | None = 8

    def __init__(self, onnx_path: Path) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        self._session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        inputs = self._session.get_inputs()
        if len(inputs) != 1:
            raise RuntimeError(f"exported model has {len(inputs)} inputs, expected 1")
        self._input = inputs[0].name

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self._session.run(None, {self._input: batch})[0]


def onnxruntime_available() -> bool:
    """True when onnxruntime and the exporter (tf2onnx, onnx) can be imported."""
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("onnxruntime", "tf2onnx", "onnx"))


def export_onnx(feature_model, path: Path, image_size: int) -> Path:
    """Export ``feature_model`` to ONNX at ``path`` (atomically), constants folded.

    Converts the same traced ``tf.function`` Keras's ``model.export(format="onnx")``
    would, with tf2onnx directly so that tensors the graph captures (e.g.
    EfficientNet's and ``Normalization``'s mean/variance, which the exporter
    leaves as extra graph inputs) can be folded back into initializers.
    """
    import onnx
    import tensorflow as tf
    import tf2onnx
    from onnx import numpy_helper

    spec = tf.TensorSpec((None, image_size, image_size, 3), tf.float32, name="image")
    fn = tf.function(lambda x: feature_model(x, training=False))
    # Traced once here; tf2onnx reuses this very trace (same signature), so the
    # captured placeholders' names match the ONNX inputs below.
    graph = fn.get_concrete_function(spec).graph
    constants = {
        internal.name: external.numpy()
        for external, internal in graph.captures
        if external.dtype != tf.resource and hasattr(external, "numpy")
    }
    # Big graphs only: each collection costs ~0.2 s in a large heap, ~26 of them per export.
    collect = _collect_discarded_graphs() if feature_model.count_params() > LARGE_EXPORT_PARAMS else nullcontext()
    with collect, quiet_native():
        proto, _ = tf2onnx.convert.from_function(fn, input_signature=[spec], opset=17)
    return_freed_memory()  # the converter's discarded graphs: hundreds of MB the allocator keeps otherwise
    for graph_input in list(proto.graph.input)[1:]:
        if graph_input.name not in constants:
            raise RuntimeError(f"exported model has an unexpected input {graph_input.name!r}")
        value = np.asarray(constants[graph_input.name])
        proto.graph.initializer.append(numpy_helper.from_array(value, graph_input.name))
        proto.graph.input.remove(graph_input)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        onnx.save(proto, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def return_freed_memory() -> None:
    """Hand memory freed by Python back to the system (glibc's ``malloc_trim``; elsewhere nothing).

    After a big transient job (the ONNX conversion) glibc keeps the freed heap for reuse, and
    the process's RSS stays at the job's peak for the rest of the run.
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def release_pages(array: Any) -> None:
    """Drop the resident pages of a read-only file mapping (an ``np.memmap``) from this process.

    The data stays in the file (and the page cache): a later access reads it back.  Without
    this a pass over a memory-mapped split keeps the whole split in the process's RSS.
    """
    import mmap

    handle = getattr(array, "_mmap", None)
    if handle is not None and hasattr(handle, "madvise"):
        try:
            handle.madvise(mmap.MADV_DONTNEED)
        except (OSError, ValueError):  # closed, or a platform without it
            pass


@contextmanager
def _collect_discarded_graphs() -> Iterator[None]:
    """Free each graph tf2onnx's optimizer discards before it copies the next one.

    ``tf2onnx.optimizer.optimize_graph`` deep-copies the whole graph (weights
    included) before every optimizer pass and drops the old copy; the copies
    are reference cycles, so they pile up until Python's cyclic collector runs.
    For ResNet50 that took the export to a 6.9 GB peak; collecting before each
    copy keeps it at 2.8 GB (and the export is faster).  Measured in bench/README.md.
    """
    import copy
    import gc
    import types

    import tf2onnx.optimizer as optimizer_module

    def deepcopy(value: Any, *args: Any, **kwargs: Any) -> Any:
        gc.collect()
        return copy.deepcopy(value, *args, **kwargs)

    original = optimizer_module.copy
    optimizer_module.copy = types.SimpleNamespace(deepcopy=deepcopy)  # type: ignore[assignment]
    try:
        yield
    finally:
        optimizer_module.copy = original
        gc.collect()


def _mixed_precision() -> bool:
    """True under a Keras mixed-precision policy (the base then runs on TensorFlow: ONNX Runtime's
    CPU kernels have no bfloat16 and little float16)."""
    import keras

    return keras.mixed_precision.global_policy().name != "float32"


def make_engine(feature_model, choice: str, onnx_path: Path, sample: np.ndarray) -> tuple[Any, str]:
    """The engine to compute features with, and a sentence saying why it was chosen.

    ``sample`` (a couple of real images) checks ONNX Runtime against TensorFlow
    before it is trusted; on any export problem ``auto`` falls back to TensorFlow.
    """
    if choice not in ENGINES:
        raise TlkitError(f"unknown --engine {choice!r}; choose from {', '.join(ENGINES)}")
    if choice == "tensorflow":
        return TensorFlowEngine(feature_model), "TensorFlow (--engine tensorflow)"
    if _mixed_precision():
        return TensorFlowEngine(feature_model), "TensorFlow (mixed precision: ONNX Runtime is float32 here)"
    if not onnxruntime_available():
        if choice == "onnxruntime":
            raise TlkitError(
                "--engine onnxruntime needs the packages onnxruntime, tf2onnx and onnx; "
                "pip install onnxruntime tf2onnx onnx, or use --engine tensorflow"
            )
        return TensorFlowEngine(feature_model), "TensorFlow (onnxruntime is not installed)"
    try:
        if not onnx_path.exists():
            export_onnx(feature_model, onnx_path, int(sample.shape[1]))
        engine = OnnxRuntimeEngine(onnx_path)
        check = feature_model(sample[:2], training=False)
        got = engine(sample[:2])
        scale = float(np.max(np.abs(check))) or 1.0
        if float(np.max(np.abs(np.asarray(check) - got))) > 1e-3 * scale:
            raise RuntimeError("ONNX Runtime's features differ from TensorFlow's")
    except Exception as exc:
        onnx_path.unlink(missing_ok=True)
        if choice == "onnxruntime":
            raise TlkitError(f"ONNX export or check failed ({exc}); use --engine tensorflow") from exc
        return TensorFlowEngine(feature_model), f"TensorFlow (ONNX export failed: {exc})"
    return engine, "ONNX Runtime" + (" (--engine onnxruntime)" if choice == "onnxruntime" else "")


# -- the cache -----------------------------------------------------------------


@dataclass
class FeatureSet:
    """Cached features of one split: ``features[view, i]`` belongs to ``labels[i]``."""

    features: np.ndarray  # float32 memmap (views, N, *feature_shape)
    labels: np.ndarray
    key: str
    path: Path
    hit: bool  # True when read from the cache, False when computed now
    seconds: float  # time spent computing (0 on a hit)

    @property
    def views(self) -> int:
        return int(self.features.shape[0])


def entry_key(parts: dict[str, Any]) -> str:
    """The cache key of everything that determines a split's features."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


def _open_entry(path: Path, key: str, *, verify: bool = True) -> np.ndarray | None:
    """The entry's features, or None when it is missing, incomplete or damaged (then it is recomputed).

    A truncated or edited ``features.f32`` (size or SHA-256 not those in meta.json), a meta.json
    that is not the JSON tlkit wrote, or an entry from before checksums: all are misses, never
    errors — the cache is a cache.  ``verify=False`` skips the checksum for an entry this process
    has just written.
    """
    meta_path = path / _META_FILE
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
        if (path / _ENTRY_FILE).stat().st_size != dtype.itemsize * math.prod(shape):
            return None
        if verify and meta.get("sha256") != sha256_file(path / _ENTRY_FILE):
            return None
        return np.memmap(path / _ENTRY_FILE, dtype=dtype, mode="r", shape=shape)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def load_or_compute(
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
) -> FeatureSet:
    """Return the cached features for ``key``, computing and storing them on a miss.

    ``pixels`` is the decoded uint8 split (read batch by batch, never whole);
    the features are stored as ``dtype`` (float32, or float16 at half the size).
    With ``augment(batch, view)`` every view is an augmented copy (one per
    epoch in training); without it there is one clean view.  ``progress(n)``
    is called with the number of images just done.
    """
    root = cache_root() / "features"
    path = root / key
    cached = _open_entry(path, key)
    if cached is not None:
        return FeatureSet(cached, labels, key, path, hit=True, seconds=0.0)
    seconds = compute_entry(
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
    features = _open_entry(path, key, verify=False)  # just written and checked
    if features is None:  # pragma: no cover - the entry was removed under us
        raise TlkitError(f"feature cache entry {path} vanished while in use; rerun")
    return FeatureSet(features, labels, key, path, hit=False, seconds=seconds)


def compute_entry(
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
    """Run the engine over ``pixels`` and publish the cache entry ``key`` (atomically); return the seconds.

    The arguments are :func:`load_or_compute`'s; a multi-worker run's parts
    (:mod:`tlkit.features.shards`) are computed the same way.
    """
    root = cache_root() / "features"
    shape = (views, len(pixels), *feature_shape)
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{key}-", dir=root))
    except OSError as exc:
        raise TlkitError(
            f"cannot write the feature cache in {root} ({exc.strerror or exc}); set {CACHE_ENV} to a "
            f"writable folder or train with --no-feature-cache"
        ) from None
    started = time.perf_counter()
    try:
        try:
            with open(tmp / _ENTRY_FILE, "wb") as out:
                digest = _run_engine_into(
                    out, shape, dtype, pixels, engine, batch_size=batch_size, augment=augment, progress=progress
                )
        except OSError as exc:
            raise TlkitError(
                f"cannot write the feature cache in {root} ({exc.strerror or exc}); free some space, set "
                f"{CACHE_ENV} to another folder or train with --no-feature-cache"
            ) from None
        # No fsync: every later open checks the SHA-256, so an entry torn by a crash is a miss.
        release_pages(pixels)
        seconds = time.perf_counter() - started
        meta = {
            "shape": list(shape),
            "dtype": dtype,
            "seconds": round(seconds, 3),
            "engine": getattr(engine, "name", "?"),
            **(describe or {}),
        }
        _commit_entry(tmp, root / key, key, meta, digest=digest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return seconds


def _run_engine_into(
    out: Any,
    shape: tuple[int, ...],
    dtype: str,
    pixels: np.ndarray,
    engine: Any,
    *,
    batch_size: int,
    augment: Callable[[np.ndarray, int], np.ndarray] | None,
    progress: Callable[[int], None] | None,
) -> str:
    """Write the engine's features of ``pixels`` (``shape`` = views, images, ...) to the binary
    file ``out`` in order, and return their SHA-256.

    Plain writes, not a memory map: the written features stay in the page cache, not in this
    process's RSS, and a full disk is an ``OSError`` rather than a crash.  Hashing each batch
    as it is written gives the file's digest without reading it back.
    """
    views, count = shape[:2]
    digest = hashlib.sha256()
    for view in range(views):
        for start in range(0, count, batch_size):
            batch = np.asarray(pixels[start : start + batch_size], dtype=np.float32)
            if augment is not None:
                batch = augment(batch, view)
            rows = np.ascontiguousarray(engine(batch), dtype=dtype)
            if rows.shape != (len(batch), *shape[2:]):
                raise RuntimeError(
                    f"the feature engine returned shape {rows.shape}, expected {(len(batch), *shape[2:])}"
                )
            out.write(rows.data)
            digest.update(rows.data)
            if progress is not None:
                progress(len(batch))
    return digest.hexdigest()


#: Bytes of features a dataset may copy into RAM; above, batches are read from the file.
#: (Held in RAM, the gather is free; read per batch, a step costs a few ms more but memory
#: stays flat: 5,000 ResNet50 images are 2 GB of features.)
IN_MEMORY_BUDGET = 1 << 30


def _row_reader(table: np.ndarray, rows_total: int, shape: tuple[int, ...]) -> Callable[[np.ndarray], np.ndarray]:
    """``read(rows) -> float32 features`` of flat rows of a cached table, without mapping it whole.

    A memory-mapped entry is read with ``preadv`` (:class:`_EntryRows`); anything else is indexed.
    """
    path = getattr(table, "filename", None)
    if path is not None and hasattr(os, "preadv") and not getattr(table, "offset", 0):
        return _EntryRows(path, table.dtype, shape)
    flat = table.reshape(rows_total, *shape)

    def indexed(rows: np.ndarray) -> np.ndarray:
        ordered = flat[np.sort(rows)][np.argsort(np.argsort(rows))]  # sorted reads, original order
        return np.asarray(ordered, dtype=np.float32)

    return indexed


class _EntryRows:
    """Reads rows of a cache entry's feature file with ``preadv`` straight into the batch.

    The file's pages stay in the page cache, outside this process's RSS (a memory map touched
    over an epoch would hold the whole split there).  The descriptor closes with the reader.
    """

    def __init__(self, path: str | Path, dtype: np.dtype, shape: tuple[int, ...]) -> None:
        self._path, self._dtype, self._shape = path, dtype, shape
        self._row_bytes = dtype.itemsize * math.prod(shape)
        self._fd = os.open(path, os.O_RDONLY)

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        out = np.empty((len(rows), *self._shape), dtype=self._dtype)
        raw = out.reshape(len(rows), -1).view(np.uint8)
        for i, row in enumerate(rows.tolist()):
            if os.preadv(self._fd, [raw[i]], row * self._row_bytes) != self._row_bytes:
                raise TlkitError(
                    f"feature cache entry {self._path} is shorter than expected; clear the cache and rerun"
                )
        return out.astype(np.float32, copy=False)

    def __del__(self) -> None:
        fd, self._fd = getattr(self, "_fd", None), None
        if fd is not None:
            os.close(fd)


def make_feature_dataset(
    features: FeatureSet,
    *,
    batch_size: int,
    num_classes: int,
    shuffle: bool,
    seed: int,
    first_pass: int = 0,
    in_memory_budget: int | None = None,
):
    """A ``tf.data.Dataset`` of ``(features, one_hot)`` batches of a cached split, built natively.

    Epoch k visits the images in the order ``np.random.default_rng(seed + k).permutation(N)``
    (split order without ``shuffle``) and reads view ``k % views`` — a different
    augmentation of each image every epoch, as end-to-end training would see.
    ``first_pass`` is the first epoch's index (for resumed runs).

    Python runs once per epoch (to draw that epoch's order); batches are
    gathered in the graph from the features held in memory — or, when they
    exceed ``in_memory_budget`` bytes, read from the memmap batch by batch.
    """
    import tensorflow as tf

    count = len(features.labels)
    views = features.views
    shape = tuple(features.features.shape[2:])
    passes = itertools.count(first_pass)

    def epoch_orders() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        epoch = next(passes)
        order = np.random.default_rng(seed + epoch).permutation(count) if shuffle else np.arange(count)
        # Row of (view, image) in the flattened (views * N) feature table.
        yield (order + (epoch % views) * count).astype(np.int64), features.labels[order].astype(np.int32)

    label_shape = tuple(features.labels.shape[1:])  # () for class indices, (C,) for multi-label multi-hot
    orders = tf.data.Dataset.from_generator(
        epoch_orders,
        output_signature=(
            tf.TensorSpec(shape=(count,), dtype=tf.int64),
            tf.TensorSpec(shape=(count, *label_shape), dtype=tf.int32),
        ),
    )

    def targets(labels):
        return tf.cast(labels, tf.float32) if label_shape else tf.one_hot(labels, num_classes, dtype=tf.float32)

    batches = orders.flat_map(lambda rows, labels: tf.data.Dataset.from_tensor_slices((rows, labels)).batch(batch_size))
    budget = IN_MEMORY_BUDGET if in_memory_budget is None else in_memory_budget
    if features.features.nbytes <= budget:
        table = tf.constant(np.asarray(features.features).reshape(views * count, *shape))
        release_pages(features.features)  # the copy is in the tensor; the mapping need not stay resident

        def gather(rows, labels):
            # float16 entries stay float16 in memory (half the RAM); the head sees float32.
            x = tf.cast(tf.gather(table, rows), tf.float32)
            return x, targets(labels)
    else:
        read_rows = _row_reader(features.features, views * count, shape)

        def gather(rows, labels):
            x = tf.numpy_function(read_rows, [rows], tf.float32, stateful=False)
            x.set_shape((None, *shape))
            return x, targets(labels)

    steps = math.ceil(count / batch_size)
    dataset = batches.map(gather)  # one memcpy per batch: a parallel map measured slower
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(steps)).prefetch(2)
    from tlkit.data.images import steady_pipeline
    from tlkit.training.distribute import shard_by_data

    return shard_by_data(steady_pipeline(dataset))


# -- cache management ----------------------------------------------------------


def cache_entries() -> list[dict[str, Any]]:
    """Every complete entry in the cache with its metadata and size."""
    entries = []
    for sub in ("features", "onnx"):
        folder = cache_root() / sub
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            if path.name.startswith("."):
                continue
            size = (
                sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size
            )
            meta: dict[str, Any] = {}
            if (path / _META_FILE).is_file():
                try:
                    meta = json.loads((path / _META_FILE).read_text())
                except ValueError:
                    meta = {}
            entries.append({"kind": sub, "name": path.name, "path": str(path), "bytes": size, **meta})
    return entries


def clear_cache() -> tuple[int, int]:
    """Delete every cache entry (and leftovers of crashed runs); return (entries, bytes) freed."""
    root = cache_root()
    entries, freed = 0, 0
    for sub in ("features", "onnx"):
        folder = root / sub
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            size = (
                sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size
            )
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            entries += 0 if path.name.startswith(".") else 1
            freed += size
    return entries, freed


# -- one run's features ---------------------------------------------------------


def _augment_with(augmenter) -> Callable[[np.ndarray, int], np.ndarray]:
    """An ``augment(batch, view)`` callback running the model's augmentation layers in training mode."""

    def augment(batch: np.ndarray, view: int) -> np.ndarray:
        return np.asarray(augmenter(batch, training=True))

    return augment


@dataclass
class RunFeatures:
    """The cached features a training run uses, and how they were obtained."""

    train: FeatureSet
    val: FeatureSet
    engine: str  # engine name, or "cache" when both splits were cache hits
    engine_reason: str

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"engine": self.engine, "engine_reason": self.engine_reason}
        for name, fs in (("train", self.train), ("val", self.val)):
            images = len(fs.labels) * fs.views
            out[name] = {
                "cache": "hit" if fs.hit else "computed",
                "views": fs.views,
                "entry": str(fs.path),
                "seconds": round(fs.seconds, 2),
                "images_per_s": round(images / fs.seconds, 1) if fs.seconds else None,
            }
        return out


@dataclass
class FeaturePlan:
    """What keys a run's cached features: everything but the images, plus how to compute misses."""

    parts: Any
    base_name: str
    image_size: int
    engine_choice: str
    views: int  # augmented views of the train split (0: one clean view)
    augmentations: list[str]
    seed: int
    weights_fp: str
    shard: tuple[int, int] = (0, 1)  # (this worker, workers): a multi-worker run splits the pass
    dtype: str = "float32"  # how the entries store the features (float16: half the disk and RAM)
    _hashes: dict[tuple[str, ...], str] = field(default_factory=dict, repr=False)

    def files_fp(self, files: Sequence[str | Path]) -> str:
        """:func:`files_fingerprint` of ``files``, computed once per list of files (hashing reads every image)."""
        key = tuple(str(f) for f in files)
        if key not in self._hashes:
            self._hashes[key] = files_fingerprint(files)
        return self._hashes[key]

    def _common(self) -> dict[str, Any]:
        from tlkit.version import __version__

        common = {
            "tlkit": __version__,
            "base": self.base_name,
            "image_size": self.image_size,
            "weights": self.weights_fp,
            "preprocess": layers_fingerprint(self.parts.preprocess_layers),
        }
        # Keys of float32 map entries stay as they were before these options existed.
        if self.parts.pooling:  # the pooled vector, not the map
            common["pooling"] = self.parts.pooling
        if self.dtype != "float32":
            common["dtype"] = self.dtype
        return common

    def split_plan(self, name: str, files: Sequence[str | Path]) -> dict[str, Any]:
        """The key material of split ``name`` (its images' content hashes included)."""
        augmented = name == "train" and self.views > 0
        return dict(
            self._common(),
            split=name,
            files=self.files_fp(files),
            views=self.views if augmented else 1,
            augmentations=self.augmentations if augmented else [],
            seed=self.seed if augmented else None,
        )

    def expected_engine(self) -> str:
        """The engine a miss would use (part of the key: engines differ by ~1e-6)."""
        if self.engine_choice != "tensorflow" and onnxruntime_available() and not _mixed_precision():
            return "onnxruntime"
        return "tensorflow"

    @property
    def onnx_path(self) -> Path:
        preprocess = self._common()["preprocess"]
        pooled = f"-{self.parts.pooling}pool" if self.parts.pooling else ""
        return (
            cache_root()
            / "onnx"
            / f"{self.base_name}-{self.image_size}-{self.weights_fp[:16]}-{preprocess[:8]}{pooled}.onnx"
        )


def lookup_features(plan: FeaturePlan, splits: dict[str, tuple[Sequence[Path], np.ndarray]]) -> RunFeatures | None:
    """The run's features when every split is in the cache (``splits``: name → (files, labels)); else None.

    Needs only the files' content hashes — no decoding, no engine — so a second
    run on the same images skips both.
    """
    sets = {}
    for name, (files, labels) in splits.items():
        split_plan = plan.split_plan(name, files)
        key = entry_key({**split_plan, "engine": plan.expected_engine()})
        path = cache_root() / "features" / key
        cached = _open_entry(path, key)
        if cached is None:
            cached = _pooled_from_cached_map(plan, split_plan, plan.expected_engine(), key)
        if cached is None or cached.shape[1] != len(labels):
            return None
        sets[name] = FeatureSet(cached, labels, key, path, hit=True, seconds=0.0)
    return RunFeatures(sets["train"], sets["val"], "cache", "all features were in the cache")


def _pooled_from_cached_map(plan: FeaturePlan, split_plan: dict[str, Any], engine: str, key: str) -> np.ndarray | None:
    """A pooling head's entry made from the cached feature *map* of the same images, when there is one.

    Pooling the map (mean or max over its h×w positions) is what the head's own
    pooling layer does, so a linear probe after a ``dense256`` run on the same
    images runs no base at all.
    """
    if not plan.parts.pooling:
        return None
    map_plan = {k: v for k, v in split_plan.items() if k != "pooling"}
    map_key = entry_key({**map_plan, "engine": engine})
    feature_map = _open_entry(cache_root() / "features" / map_key, map_key)
    if feature_map is None or feature_map.ndim != 5:
        return None
    reduce = np.mean if plan.parts.pooling == "avg" else np.max
    pooled = np.stack([reduce(np.asarray(view, dtype=np.float32), axis=(1, 2)) for view in feature_map])
    publish_entry(
        cache_root() / "features",
        key,
        pooled.astype(feature_map.dtype),
        {
            "engine": engine,
            "pooled_from": map_key,
            "split": split_plan.get("split"),
            "base": plan.base_name,
            "image_size": plan.image_size,
        },
    )
    return _open_entry(cache_root() / "features" / key, key)


def publish_entry(root: Path, key: str, features: np.ndarray, meta: dict[str, Any]) -> None:
    """Write a complete cache entry (``features`` + meta.json) under ``root/key`` (see :func:`_commit_entry`)."""
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{key}-", dir=root))
    try:
        out = np.memmap(tmp / _ENTRY_FILE, dtype=features.dtype, mode="w+", shape=features.shape)
        out[:] = features
        out.flush()
        del out
        _commit_entry(tmp, root / key, key, {**meta, "shape": list(features.shape), "dtype": features.dtype.name})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _commit_entry(tmp: Path, path: Path, key: str, meta: dict[str, Any], *, digest: str | None = None) -> None:
    """Finish the entry built in ``tmp`` (its meta.json, with the features' SHA-256) and rename it onto ``path``.

    ``digest`` is the features' SHA-256 when the writer hashed them as it went (else the
    file is read back and hashed).  The rename is atomic.  When ``path`` is already taken by
    a valid entry (another process published first) that one stays; a damaged entry or a
    stray file in the way is replaced.
    """
    digest = digest or sha256_file(tmp / _ENTRY_FILE)
    meta = {**meta, "key": key, "complete": True, "created": time.time(), "sha256": digest}
    (tmp / _META_FILE).write_text(json.dumps(meta, indent=2))
    try:
        os.rename(tmp, path)
    except OSError:
        if _open_entry(path, key) is None:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            os.rename(tmp, path)


def run_features(
    plan: FeaturePlan,
    splits: dict[str, Any],
    *,
    batch_size: int,
    progress: Callable[[str, int], Callable[[int], None]] | None = None,
) -> RunFeatures:
    """Features of the decoded ``splits`` (``{"train": DecodedSplit, "val": DecodedSplit}``), from the
    cache or computed (and cached) on a miss.

    ``plan.views`` ≥ 1 caches that many augmented views of the train split
    (through ``plan.parts.augmenter``); 0 caches one clean view.
    ``progress(label, total)`` returns a callback advanced by images done.  ``batch_size`` is
    the images per engine call unless the engine has its own (ONNX Runtime on CPU: 8).
    """
    parts = plan.parts
    engine, reason, engine_name = None, "", "cache"
    sets = {}
    for name, decoded in splits.items():
        split_plan = plan.split_plan(name, decoded.files)
        # The engine is part of the key, so it is chosen before the lookup; exporting to
        # ONNX (and checking it on two real images) happens only on a miss.
        engine_key = engine.name if engine is not None else plan.expected_engine()
        key = entry_key({**split_plan, "engine": engine_key})
        cached = _open_entry(cache_root() / "features" / key, key)
        if cached is None and engine is None:
            cached = _pooled_from_cached_map(plan, split_plan, engine_key, key)
        if cached is not None:
            sets[name] = FeatureSet(cached, decoded.labels, key, cache_root() / "features" / key, True, 0.0)
            continue
        if engine is None:
            sample = np.asarray(decoded.pixels[:2], dtype=np.float32)
            engine, reason = make_engine(parts.cached_model, plan.engine_choice, plan.onnx_path, sample)
            engine_name = engine.name
            if engine.name != engine_key:  # fell back to TensorFlow: key by what really ran
                key = entry_key({**split_plan, "engine": engine.name})
        augment = _augment_with(parts.augmenter) if split_plan["augmentations"] else None
        index, workers = plan.shard
        share = len(range(index, len(decoded.labels), workers))  # this worker's images
        callback = progress(f"{name} features", share * split_plan["views"]) if progress else None
        common = dict(
            key=key,
            pixels=decoded.pixels,
            feature_shape=tuple(parts.cached_model.output.shape[1:]),
            engine=engine,
            batch_size=getattr(engine, "batch_size", None) or batch_size,
            views=split_plan["views"],
            augment=augment,
            progress=callback,
        )
        describe = {"base": plan.base_name, "image_size": plan.image_size, "split": name}
        if workers > 1:
            sets[name] = _computed_by_workers(plan, common, decoded.labels, describe)
        else:
            sets[name] = load_or_compute(labels=decoded.labels, describe=describe, dtype=plan.dtype, **common)
    return RunFeatures(sets["train"], sets["val"], engine_name, reason or "all features were in the cache")


def _computed_by_workers(
    plan: FeaturePlan, common: dict[str, Any], labels: np.ndarray, describe: dict[str, Any]
) -> FeatureSet:
    """This worker's part of the split's features, then the whole (see :mod:`tlkit.features.shards`)."""
    from tlkit.features import shards as feature_shards

    index, workers = plan.shard
    started = time.perf_counter()
    feature_shards.compute_part(index=index, count=workers, describe=describe, dtype=plan.dtype, **common)
    whole = feature_shards.assemble(key=common["key"], count=workers, total=len(labels), describe=describe)
    path = cache_root() / "features" / common["key"]
    return FeatureSet(whole, labels, common["key"], path, hit=False, seconds=time.perf_counter() - started)


def head_probabilities(head: Any, features: FeatureSet, batch_size: int = 256) -> np.ndarray:
    """The head's class probabilities on a split's clean cached features (view 0), in split order.

    Equal to the whole model's predictions on that split's images (up to the
    engine's ~1e-6), without decoding an image or running the base.
    """
    view = features.features[0]
    parts = [
        np.asarray(head.predict_on_batch(np.asarray(view[start : start + batch_size], dtype=np.float32)))
        for start in range(0, len(features.labels), batch_size)
    ]
    return np.concatenate(parts).astype(np.float64)
