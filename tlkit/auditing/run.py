"""``tlkit.audit``: one feature pass through the feature store, then every check on the cached features.

The data is scanned exactly as ``tlkit train`` scans it (class folders or ``--labels``, the same
``--val-split`` and ``--seed``), and the frozen base's features are looked up in, or computed into,
the same :class:`~tlkit.features.store.FeatureStore` entries a training run with the default head
uses: an audit followed by ``tlkit train`` on the same base computes nothing twice, and the other
way round.  The base's feature maps are average-pooled into one embedding per image, on which:

- exact duplicates come from the images' content hashes (already computed to key the cache);
- near duplicates from the embeddings' nearest neighbours, confirmed by a perceptual hash;
- leaks are validation images with an exact or near copy in train;
- label issues from K out-of-fold logistic heads and cleanlab's confident learning;
- outliers from the embeddings' k-nearest-neighbour distances.

Nothing is written into the data folder; the results go into a new folder published whole.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from tlkit.auditing import duplicates, images, labels
from tlkit.auditing.options import AUDIT_OPTIONS, DEFAULT_OUTPUT, check_audit_options
from tlkit.auditing.outputs import DEFAULT_RELABEL_THRESHOLD, write_audit_folder
from tlkit.auditing.result import AuditResult, Unreadable
from tlkit.config.options import TrainConfig
from tlkit.config.preflight import check_output
from tlkit.config.resolve import resolve_config
from tlkit.errors import TlkitError
from tlkit.observer import TrainingObserver
from tlkit.registry.specs import safe_name
from tlkit.training.distribute import precision_policy_kept
from tlkit.training.run import TrainingRun
from tlkit.training.stages import sigterm_stops_training

POOL_CHUNK = 256  # images pooled at a time: a chunk of 7×7×2048 float32 maps is ~100 MB


def audit_config(config: TrainConfig | None = None, **options: Any) -> TrainConfig:
    """The training configuration whose feature pass the audit shares: the user's data, base,
    weights and size with the default head, no augmentation, no fine-tuning, bad images skipped."""
    unknown = sorted(set(options) - set(AUDIT_OPTIONS))
    if unknown:
        raise TlkitError(f"tlkit audit takes no {', '.join(unknown)} (it takes {', '.join(AUDIT_OPTIONS)})")
    kept = {name: getattr(config, name) for name in AUDIT_OPTIONS} if config is not None else {}
    if {**kept, **options}.get("multi_label"):
        raise TlkitError(
            "tlkit audit does not audit multi-label labels yet (--multi-label); audit a single-label CSV or class folders"
        )
    resolved = resolve_config(
        None,
        **{k: v for k, v in {**kept, **options}.items() if v is not None},
        skip_bad_images=True,
        feature_cache=True,
    )
    return resolved


@contextmanager
def _timed(timings: dict[str, float], phase: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        timings[phase] = round(timings.get(phase, 0.0) + time.perf_counter() - started, 3)


def pooled(features: np.ndarray) -> np.ndarray:
    """One float32 embedding per image from a split's cached features (view 0), average-pooled over
    the feature map's spatial axes in chunks (a pooled entry is returned as it is)."""
    first_view = features[0]
    if first_view.ndim == 2:
        return np.asarray(first_view, dtype=np.float32)
    axes = tuple(range(1, first_view.ndim - 1))
    out = np.empty((first_view.shape[0], first_view.shape[-1]), dtype=np.float32)
    for start in range(0, len(out), POOL_CHUNK):
        chunk = np.asarray(first_view[start : start + POOL_CHUNK], dtype=np.float32)
        out[start : start + len(chunk)] = chunk.mean(axis=axes)
    return out


def _relative(root: Path) -> Callable[[Path], str]:
    resolved_root = root.resolve()

    def rel(path: Path) -> str:
        path = Path(path)
        if path.is_relative_to(root):
            return path.relative_to(root).as_posix()
        resolved = path.resolve()
        return resolved.relative_to(resolved_root).as_posix() if resolved.is_relative_to(resolved_root) else str(path)

    return rel


def audit(
    config: TrainConfig | None = None,
    *,
    output: str | Path | None = DEFAULT_OUTPUT,
    folds: int = labels.DEFAULT_FOLDS,
    relabel: bool = False,
    relabel_threshold: float = DEFAULT_RELABEL_THRESHOLD,
    near_threshold: float | None = None,
    observer: TrainingObserver | None = None,
    **options: Any,
) -> AuditResult:
    """Audit a data set; return what was found (and write it under ``output`` unless it is None).

    ``options`` are train's data and model options (``data``, ``labels``, ``base``, ``weights``,
    ``image_size``, ``val_split``, ``seed``, ``engine``, ``feature_dtype``), so the audit sees the
    data, split and features a training run with them would.  ``folds`` out-of-fold heads score
    the labels; ``relabel`` applies suggested labels whose score is at least ``relabel_threshold``
    in ``cleaned.csv``; ``near_threshold`` overrides the cosine similarity of near duplicates.
    """
    check_audit_options(folds=folds, relabel_threshold=relabel_threshold, near_threshold=near_threshold)
    config = audit_config(config, **options)
    data_root = Path(config.data)
    if output is not None:
        target_parent = Path(output).expanduser().resolve()
        if target_parent.is_relative_to(data_root.resolve()):
            raise TlkitError(
                f"--output {output} is inside the data folder {config.data}; tlkit never writes there, pass another --output"
            )
        check_output(target_parent)
    observer = observer or TrainingObserver()
    timings: dict[str, float] = {}
    started = time.perf_counter()
    run = TrainingRun.start(config, observer)
    run.writes_run_dir = False
    run.warns_of_shared_copies = False  # the audit lists them itself
    run.describes_training = False  # no head is trained: only the base's features are used
    with (
        tempfile.TemporaryDirectory(prefix="tlkit-pixels-") as workdir,
        sigterm_stops_training(),
        precision_policy_kept(),
    ):
        with _timed(timings, "prepare"):
            run.prepare(workdir)
        with _timed(timings, "features"):
            run.features()
        result = _checks(run, config, folds=folds, near_threshold=near_threshold, timings=timings, observer=observer)
    timings["total"] = round(time.perf_counter() - started, 3)
    result.timings = timings
    if output is not None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        target = Path(output).expanduser().resolve() / f"{stamp}-{safe_name(config.base)}"
        with _timed(timings, "write"):
            write_audit_folder(result, target, relabel=relabel, relabel_threshold=relabel_threshold, explicit=False)
    return result


def _checks(
    run: TrainingRun,
    config: TrainConfig,
    *,
    folds: int,
    near_threshold: float | None,
    timings: dict[str, float],
    observer: TrainingObserver,
) -> AuditResult:
    """Every check on a prepared run's decoded splits and features."""
    assert run.train_px is not None and run.val_px is not None and run.plan is not None
    assert run.run_features is not None, "the audit needs the features route"
    data_root = Path(config.data)
    rel = _relative(data_root)
    classes = list(run.classes)
    splits = {"train": run.train_px, "val": run.val_px}
    files = [Path(f) for split in splits.values() for f in split.files]
    paths = [rel(f) for f in files]
    split_of = {p: name for name, split in splits.items() for p in (rel(f) for f in split.files)}
    label_ids = np.concatenate([np.asarray(split.labels, dtype=np.int64) for split in splits.values()])
    label_of = {p: classes[int(i)] for p, i in zip(paths, label_ids)}
    unreadable = [Unreadable(rel(Path(path)), reason) for split in splits.values() for path, reason in split.bad]
    result = AuditResult(
        data=data_root,
        base=config.base,
        image_size=config.image_size,
        weights=config.weights,
        classes=classes,
        labels=label_of,
        splits=split_of,
        unreadable=sorted(unreadable, key=lambda u: u.path),
        labels_csv=Path(config.labels) if config.labels else None,
        features=run.run_features.summary(),
    )
    result.class_counts = {
        name: {c: int(np.sum(np.asarray(split.labels) == k)) for k, c in enumerate(classes)}
        for name, split in splits.items()
    }
    with _timed(timings, "embeddings"):
        embeddings = np.concatenate(
            [pooled(run.run_features.train.features), pooled(run.run_features.val.features)], axis=0
        )
    with _timed(timings, "duplicates"):
        hashes = run.plan.file_hashes(files)  # already computed to key the cache: no second read
        result.duplicates = duplicates.exact_groups(paths, hashes, label_of)
        neighbours = duplicates.nearest_neighbours(embeddings)  # one search, for near duplicates and outliers
        near_options: dict[str, Any] = {} if near_threshold is None else {"threshold": near_threshold}
        result.near_duplicates = duplicates.near_groups(
            paths, embeddings, files, label_of, exact=result.duplicates, neighbours=neighbours, **near_options
        )
        result.leaks = duplicates.leaks(split_of, result.duplicates, result.near_duplicates)
    with _timed(timings, "labels"):
        if len(classes) >= 2:
            probs = labels.out_of_fold_probabilities(
                embeddings, label_ids, len(classes), folds=folds, seed=config.seed, neighbours=neighbours
            )
            result.label_issues = labels.label_issues(paths, label_ids, probs, classes, split_of)
        else:
            result.notes.append("one class only: label issues need two classes or more")
    with _timed(timings, "outliers"):
        result.outliers = labels.outliers(paths, embeddings, label_ids, split_of, neighbours=neighbours)
    with _timed(timings, "image_stats"):
        result.image_stats = images.image_stats(files)
    observer.message(summary_line(result))
    return result


def summary_line(result: AuditResult) -> str:
    """One line: how many images, classes and findings of each kind."""
    n = len(result.labels)
    parts = [
        f"{len(result.label_issues)} label issue(s)",
        f"{len(result.duplicates)} duplicate group(s)"
        + (f" ({len(result.conflicts)} across classes)" if result.conflicts else ""),
        f"{len(result.near_duplicates)} near-duplicate group(s)",
        f"{len(result.leaks)} train/val leak(s)",
        f"{len(result.outliers)} outlier(s)",
        f"{len(result.unreadable)} unreadable",
    ]
    return f"Audited {n} image(s) in {len(result.classes)} class(es): " + ", ".join(parts)


__all__ = ["audit", "audit_config", "pooled", "summary_line"]
