"""Using a trained model: open a run, a ``.keras`` file or an export, and predict on image files, streamed.

>>> for p in tlkit.predict("runs/20261128-101500-mobilenet_v2-dense256", ["photos/"]):
...     print(p.path, p.label, p.prob) if p.ok else print(p.path, "unreadable:", p.error)

:func:`predict` returns a generator: images are decoded a few at a time in a
small thread pool, in order, exactly as training decodes them
(:func:`tlkit.data.decode.load_image`), batched, and each batch's predictions are
yielded before any image beyond the next batch is read — so the first results
of a huge folder appear at once and memory stays bounded.  An unreadable file
yields a :class:`Prediction` with ``error`` set instead of stopping.

Exported models (``tlkit export``: ``.tflite``, ``.onnx``, a SavedModel folder or
an export folder) are opened through :mod:`tlkit.exporting.exporter`, which wraps each
runtime in an object with the three members used here: ``predict_on_batch``,
``input_shape`` and ``output_shape``.

TensorFlow is imported only when a model is loaded.
"""

from __future__ import annotations

import glob
import os
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tlkit.data import decode
from tlkit.data.folders import IMAGE_EXTENSIONS, image_files
from tlkit.errors import TlkitError, first_line
from tlkit.inference.artifacts import locate_artifact
from tlkit.inference.thresholds import run_thresholds
from tlkit.inference.tta import TTA, parse_tta
from tlkit.io.rundir import RunDir, read_classes_file
from tlkit.io.tfenv import import_tensorflow

__all__ = [
    "ModelSource",
    "Prediction",
    "Predictor",
    "decode_stream",
    "decoded_batches",
    "open_model",
    "predict",
    "ranked",
    "resolve_paths",
]

MODEL_SUFFIXES = (".keras", ".h5")


# --------------------------------------------------------------------------- run directories and models


@dataclass
class ModelSource:
    """A model to use, where it came from, and its class names (index = output index)."""

    model_path: Path
    run_dir: Path | None
    classes: list[str]
    classes_known: bool  # False: no classes.json, classes are "0".."n-1"
    config: dict[str, Any] = field(default_factory=dict)  # the run's config.toml ({} for a bare model)
    notes: list[str] = field(default_factory=list)
    model: Any = None  # the loaded keras.Model

    @property
    def image_size(self) -> int:
        """The model's input height/width (images are resized to it)."""
        shape = getattr(self.model, "input_shape", None)
        if shape and len(shape) == 4 and shape[1]:
            return int(shape[1])
        return int(self.config.get("image_size") or 224)

    @property
    def name(self) -> str:
        return str(self.run_dir or self.model_path)


def _locate(run_or_model: str | Path) -> tuple[Path, Path | None]:
    """``(model_path, run_dir or None)`` for a run directory or a model file."""
    path = Path(run_or_model).expanduser()
    if path.is_dir():
        run = RunDir.open(path)
        return run.require_model(), run.path
    if not path.exists():
        raise TlkitError(f"{path} does not exist; pass a run directory, a .keras model file or an exported model")
    if path.suffix.lower() not in MODEL_SUFFIXES:
        raise TlkitError(
            f"{path} is neither a run directory nor a .keras model file (nor an exported "
            f".tflite/.onnx model, SavedModel or export folder)"
        )
    parent = RunDir(path.parent)
    is_run = parent.is_run_dir(parent.path) and parent.classes_path.is_file()
    return path, (parent.path if is_run else None)


def open_model(run_or_model: str | Path, *, model: Any = None) -> ModelSource:
    """Resolve a run directory, ``.keras`` file or exported model, read its classes and load the model.

    ``model`` is an already loaded ``keras.Model`` to use instead of reading
    the file (what ``tlkit train`` passes, to save a reload).  Classes come
    from the run's ``classes.json``, or a ``classes.json`` next to a bare model
    file; without one they are named ``"0"``..``"n-1"`` (noted in ``notes``).
    An exported model (see :func:`tlkit.exporting.exporter.locate_artifact`) takes its
    classes from the ``classes.json`` beside it and is run by its own runtime;
    its ``run_dir`` is None.

    Raises:
        TlkitError: not a run or model, the model cannot be loaded, or its
            number of outputs differs from the number of classes.
    """
    notes: list[str] = []
    artifact = locate_artifact(run_or_model)
    if artifact is not None:
        model_path, run_dir, classes_file = artifact.path, None, artifact.classes_path
        config = dict((artifact.info.get("source") or {}).get("config") or {})
        if (artifact.info.get("parity") or {}).get("forced"):
            notes.append(f"{artifact.folder} failed its parity check at export and was kept with --force")
        if model is None:
            model = artifact.load()
    else:
        model_path, run_dir = _locate(run_or_model)
        config = RunDir(run_dir).read_config() if run_dir else {}
        classes_file = RunDir(run_dir or model_path.parent).classes_path
        if model is None:
            model = load_keras_model(model_path)
    classes = read_classes_file(classes_file) if classes_file.is_file() else None
    outputs = _num_outputs(model, model_path)
    if classes is None:
        classes = [str(i) for i in range(outputs)]
        notes.append(
            f"no {RunDir.CLASSES} next to {model_path.name}: classes are named by output index 0..{outputs - 1}"
        )
    elif len(classes) != outputs:
        raise TlkitError(
            f"{model_path} has {outputs} outputs but {classes_file} lists {len(classes)} classes; "
            f"they must belong together"
        )
    return ModelSource(
        model_path=model_path,
        run_dir=run_dir,
        classes=list(classes),
        classes_known=classes_file.is_file(),
        config=config,
        notes=notes,
        model=model,
    )


def load_keras_model(path: str | Path):
    """``keras.saving.load_model(path)`` with TensorFlow's start-up quiet and errors in one line."""
    import_tensorflow()
    import keras  # lazy: Keras imports TensorFlow; only loading a Keras model needs it

    try:
        return keras.saving.load_model(str(path), compile=False)
    except Exception as exc:  # noqa: BLE001 - Keras raises many types for unreadable models
        raise TlkitError(f"cannot load the model {path}: {first_line(exc)}") from exc


def _num_outputs(model: Any, path: Path) -> int:
    shape = getattr(model, "output_shape", None)
    if not shape or isinstance(shape, list) or len(shape) != 2 or not shape[-1]:
        raise TlkitError(f"{path} is not a classifier: expected one (batch, classes) output, got {shape}")
    return int(shape[-1])


class Predictor:
    """Runs a model on uint8 pixel batches and returns probabilities.

    Batches after the first are zero-padded to the first batch's size, so the
    compiled predict function is traced once (a partial last batch would trace
    it again, which costs more than the padding).
    """

    def __init__(self, model: Any) -> None:
        self.model = model
        self._batch: int | None = None

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        x = np.asarray(pixels, dtype=np.float32)
        n = len(x)
        if n == 0:
            return np.zeros((0, int(self.model.output_shape[-1])), dtype=np.float32)
        if self._batch is None:
            self._batch = n
        elif n < self._batch:
            x = np.concatenate([x, np.zeros((self._batch - n, *x.shape[1:]), dtype=np.float32)])
        probs = np.asarray(self.model.predict_on_batch(x), dtype=np.float64)
        return probs[:n]


# --------------------------------------------------------------------------- paths and decoding


def resolve_paths(paths: Iterable[str | Path]) -> Iterator[Path]:
    """The image files that ``paths`` name, lazily, in order, each once.

    - a file is used as given (whatever its extension: it is reported if unreadable);
    - a folder gives its image files, recursively and sorted (hidden ones skipped; each real
      folder visited once, so a symlink loop ends): :func:`tlkit.data.folders.image_files`;
    - a glob (``photos/*.jpg``, ``data/**/*.png``) gives its matches: image files,
      and the image files inside matching folders;
    - a path that does not exist and is not a glob is yielded too, so that it is
      reported as not found.
    """
    seen: set[Path] = set()

    def once(path: Path) -> Iterator[Path]:
        key = path.absolute()
        if key not in seen:
            seen.add(key)
            yield path

    for item in paths:
        text = os.path.expanduser(str(item))
        path = Path(text)
        if path.is_dir():
            for found in image_files(path):
                yield from once(found)
        elif path.exists():
            yield from once(path)
        elif glob.has_magic(text):
            for match in sorted(glob.glob(text, recursive=True)):
                matched = Path(match)
                if matched.is_dir():
                    for found in image_files(matched):
                        yield from once(found)
                elif matched.suffix.lower() in IMAGE_EXTENSIONS and not matched.name.startswith("."):
                    yield from once(matched)
        else:
            yield from once(path)


def _decode(path: Path, size: int) -> tuple[np.ndarray | None, str | None]:
    try:
        return decode.load_image(path, size), None
    except decode.BadImageError as exc:
        return None, exc.reason
    except OSError as exc:  # e.g. a folder or a permission problem
        return None, exc.strerror or str(exc)


def decoded_batches(
    paths: Sequence[Path], size: int, batch_size: int, *, skipped: list[dict[str, str]] | None = None
) -> Iterator[tuple[list[int], np.ndarray]]:
    """``(indices, pixels)`` for the readable images of ``paths``: uint8 ``(b, size, size, 3)`` batches of
    at most ``batch_size``, in order, decoded as :func:`decode_stream` does.

    An unreadable image is left out of every batch and, when ``skipped`` is given,
    recorded there as ``{"path": ..., "reason": ...}``.
    """
    batch: list[np.ndarray] = []
    indices: list[int] = []
    for index, (path, pixels, error) in enumerate(decode_stream(list(paths), size, lookahead=batch_size)):
        if pixels is None:
            if skipped is not None:
                skipped.append({"path": str(path), "reason": error or "unreadable"})
            continue
        batch.append(pixels)
        indices.append(index)
        if len(batch) >= batch_size:
            yield indices, np.stack(batch)
            batch, indices = [], []
    if batch:
        yield indices, np.stack(batch)


def decode_stream(
    paths: Iterable[Path], size: int, *, workers: int | None = None, lookahead: int = 32
) -> Iterator[tuple[Path, np.ndarray | None, str | None]]:
    """``(path, pixels, error)`` for each path, in order; decoded ``lookahead`` ahead in threads.

    ``pixels`` is a ``(size, size, 3)`` uint8 array from :func:`tlkit.data.decode.load_image`
    (None if unreadable; ``error`` says why).  At most ``lookahead`` images are
    read ahead of what the consumer has taken, so a slow consumer holds back reading.
    """
    workers = workers or min(4, os.cpu_count() or 1)
    iterator = iter(paths)
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tlkit-decode")
    pending: deque = deque()
    try:

        def fill() -> None:
            while len(pending) < max(1, lookahead):
                path = next(iterator, None)
                if path is None:
                    return
                pending.append((path, pool.submit(_decode, path, size)))

        fill()
        while pending:
            path, future = pending.popleft()
            pixels, error = future.result()
            fill()
            yield path, pixels, error
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


# --------------------------------------------------------------------------- predictions


@dataclass
class Prediction:
    """The top-k classes of one image, best first — or why the image could not be read.

    For a multi-label model (``multi_label`` True) ``labels`` are every label whose
    probability reaches its threshold, most probable first (possibly none).
    """

    path: str
    labels: list[str] = field(default_factory=list)
    probs: list[float] = field(default_factory=list)
    error: str | None = None
    multi_label: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def label(self) -> str | None:
        """The predicted class (top-1), or None for an unreadable file."""
        return self.labels[0] if self.labels else None

    @property
    def prob(self) -> float | None:
        """The top-1 probability, or None for an unreadable file."""
        return self.probs[0] if self.probs else None

    def as_dict(self) -> dict[str, Any]:
        if self.multi_label:
            return {
                "path": self.path,
                "labels": [{"label": lbl, "prob": p} for lbl, p in zip(self.labels, self.probs)],
                "error": self.error,
            }
        return {
            "path": self.path,
            "label": self.label,
            "prob": self.prob,
            "top": [{"label": lbl, "prob": p} for lbl, p in zip(self.labels, self.probs)],
            "error": self.error,
        }


def ranked(
    path: str, row: np.ndarray, classes: Sequence[str], top_k: int, thresholds: np.ndarray | None = None
) -> Prediction:
    """The :class:`Prediction` of one image from its probability ``row``: the ``top_k`` classes, best first,
    or for a multi-label model (``thresholds`` given) every label at or above its threshold."""
    if thresholds is not None:
        order = [i for i in np.argsort(-row, kind="stable") if row[i] >= thresholds[i]]
        return Prediction(path, [classes[i] for i in order], [float(row[i]) for i in order], multi_label=True)
    top = np.argsort(-row, kind="stable")[:top_k]
    return Prediction(path, [classes[i] for i in top], [float(row[i]) for i in top])


def predict(
    run_or_model: str | Path,
    paths: Iterable[str | Path] | str | Path,
    *,
    top_k: int = 3,
    batch_size: int = 32,
    model: Any = None,
    workers: int | None = None,
    tta: str | int | TTA | None = None,
) -> Iterator[Prediction]:
    """Predict the top-``top_k`` classes of images; a generator of :class:`Prediction`, in input order.

    Args:
        run_or_model: a run directory, a ``.keras`` file or an exported model
            (``.tflite``, ``.onnx``, SavedModel or export folder); classes from a
            ``classes.json`` beside it, else named ``"0"``..``"n-1"``.
        paths: files, folders (searched recursively) and globs; one path or a list.
        top_k: how many classes per image (at most the number of classes); a multi-label
            model gives every label at or above its threshold instead.
        batch_size: images per model call.
        model: an already loaded ``keras.Model`` to use (optional).
        workers: decoding threads (default: up to 4).
        tta: test-time augmentation: ``"flips"`` or a number of views (2..12);
            the probabilities are the mean over the views (see :mod:`tlkit.inference.tta`).

    The model is loaded and the paths are checked when this is called; images
    are read as the generator is consumed.  Unreadable files yield a
    ``Prediction`` with ``error`` set.

    Raises:
        TlkitError: the run/model is unusable, or ``paths`` match no file.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    paths = list(paths)
    if top_k < 1:
        raise TlkitError(f"top_k must be at least 1, got {top_k}")
    if batch_size < 1:
        raise TlkitError(f"batch_size must be at least 1, got {batch_size}")
    views = parse_tta(tta)
    source = open_model(run_or_model, model=model)
    found = resolve_paths(paths)
    first = next(found, None)
    if first is None:
        shown = " ".join(str(p) for p in paths[:5]) + (" …" if len(paths) > 5 else "")
        raise TlkitError(
            f"no image files to predict: {shown or '(no paths given)'} matched nothing; pass image "
            f"files, folders or globs"
        )

    thresholds = run_thresholds(source)  # None: single-label
    return _stream(
        source, _chain(first, found), min(top_k, len(source.classes)), batch_size, workers, views, thresholds
    )


def _chain(first: Path, rest: Iterator[Path]) -> Iterator[Path]:
    yield first
    yield from rest


def _stream(
    source: ModelSource,
    paths: Iterator[Path],
    top_k: int,
    batch_size: int,
    workers: int | None,
    views: TTA | None = None,
    thresholds: np.ndarray | None = None,
) -> Iterator[Prediction]:
    run = Predictor(source.model)
    classes = source.classes
    batch: list[tuple[Path, np.ndarray | None, str | None]] = []

    def flush() -> list[Prediction]:
        good = [pixels for _, pixels, _ in batch if pixels is not None]
        if not good:
            probs = np.zeros((0, len(classes)))
        elif views is not None:
            probs = views.predict(run, np.stack(good))[1]
        else:
            probs = run(np.stack(good))
        results, k = [], 0
        for path, pixels, error in batch:
            if pixels is None:
                results.append(Prediction(path=str(path), error=error or "unreadable"))
                continue
            results.append(ranked(str(path), probs[k], classes, top_k, thresholds))
            k += 1
        batch.clear()
        return results

    for item in decode_stream(paths, source.image_size, workers=workers, lookahead=batch_size):
        batch.append(item)
        if len(batch) >= batch_size:
            yield from flush()
    if batch:
        yield from flush()
