"""The checks and messages of a run's prepare step (:meth:`tlkit.training.run.TrainingRun.prepare`).

Refusals before anything is built or written (one class, ``--output`` inside the data, a class
weights file naming unknown classes, unreadable image headers, an ``--unfreeze`` the base cannot
do, a feature cache that cannot be written, pixels or files that cannot fit), the data summary and the class balance, decoding a split with progress, and
a resumed run's checkpointed state checked against the data and the base's weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from tlkit.config import preflight
from tlkit.data import decode as datamod
from tlkit.data import imbalance
from tlkit.data.headers import check_headers
from tlkit.errors import TlkitError
from tlkit.model.finetune import unfreeze_start
from tlkit.training.stages import RunState

if TYPE_CHECKING:
    from tlkit.config.options import TrainConfig
    from tlkit.data.decode import DecodedSplit
    from tlkit.data.folders import DatasetScan, Split
    from tlkit.features.plan import FeaturePlan
    from tlkit.io.rundir import RunDir
    from tlkit.model.builder import ModelParts
    from tlkit.observer import TrainingObserver


def check_scan(scan: DatasetScan, config: TrainConfig) -> None:
    """Refuse data with fewer than two classes, and an ``--output`` inside the data folder."""
    if len(scan.classes) < 2:
        raise TlkitError(f"{scan.root}/train holds only one class ({scan.classes[0]}); a classifier needs 2 or more")
    if Path(config.output).resolve().is_relative_to(scan.root.resolve()):
        raise TlkitError(
            f"--output {config.output} is inside the data folder {scan.root}; "
            f"tlkit never writes into the data folder — choose another --output"
        )


def check_inputs(scan: DatasetScan, config: TrainConfig) -> None:
    """Refuse, before anything is built, decoded or written: a ``--class-weight`` file naming classes
    the data does not have, and (without ``--skip-bad-images``) image files whose header cannot be
    read (:func:`tlkit.data.headers.check_headers`; truncated pixels are found by the decoding)."""
    if config.class_weight not in ("none", "balanced"):
        imbalance.read_class_weights(config.class_weight, scan.classes)
    if not config.skip_bad_images:
        check_headers([("train", scan.train.files), ("val", scan.val.files)])


def check_fine_tuning(parts: ModelParts, config: TrainConfig, base_name: str) -> None:
    """Refuse an ``--unfreeze`` the built base cannot do (a layer it does not have, more layers than
    it has) before the head stage trains, not after."""
    if config.fine_tune_epochs:
        unfreeze_start(parts.backbone, config.unfreeze, base_name)


def report_scan(scan: DatasetScan, observer: TrainingObserver) -> None:
    skipped = []
    if scan.skipped_hidden:
        skipped.append(f"{scan.skipped_hidden} hidden")
    if scan.skipped_other:
        skipped.append(f"{scan.skipped_other} non-image")
    observer.message(
        f"Data: {len(scan.classes)} classes, {len(scan.train.files)} train / {len(scan.val.files)} val "
        f"images (validation: {scan.val_source})" + (f"; skipped {' and '.join(skipped)} files" if skipped else "")
    )


def preflight_pixels(scan: DatasetScan, config: TrainConfig, workdir: str | Path, *, resuming: bool) -> None:
    """Refuse, before anything is decoded, an image size whose pixels or activations cannot fit."""
    preflight.check_pixels(
        len(scan.train.files) + len(scan.val.files),
        config.image_size,
        config.batch_size,
        workdir=workdir,
    )
    if not resuming:  # the least a run directory needs (the model's size is known only once built)
        preflight.check_run_dir_space(config.output, params=0, trainable=0)


def preflight_disk(
    scan: DatasetScan,
    config: TrainConfig,
    parts: ModelParts,
    plan: FeaturePlan,
    *,
    on_features: bool,
    resuming: bool,
) -> None:
    """Refuse, before the run directory is made, a run whose files or features cannot fit on disk."""
    import keras  # lazy: Keras imports TensorFlow; only the disk preflight of a built model needs it

    if not resuming:
        preflight.check_output(config.output)
        model = parts.model
        preflight.check_run_dir_space(
            config.output,
            params=model.count_params(),
            trainable=sum(int(keras.ops.size(w)) for w in model.trainable_weights),
        )
    if on_features:
        preflight.check_cache_dir(plan.store.root)
    try:
        feature_shape = tuple(int(d) for d in parts.cached_model.output.shape[1:])
    except (AttributeError, TypeError, ValueError):  # no static output shape: nothing to estimate
        feature_shape = ()
    if on_features and feature_shape:
        views = max(config.aug_views, 1)
        preflight.check_feature_space(
            plan.store.root,
            num_images=len(scan.train.files) * views + len(scan.val.files),
            views=1,
            feature_shape=feature_shape,
        )


def decode(
    name: str, split: Split, config: TrainConfig, workdir: str | Path, observer: TrainingObserver
) -> DecodedSplit:
    """The decoded split (a :class:`tlkit.data.decode.DecodedSplit`), with progress and a warning
    about skipped unreadable images."""
    task = f"decoding {name} images"
    observer.task_started(task, len(split.files))
    try:
        result = datamod.decode_split(
            split,
            config.image_size,
            workdir,
            name=name,
            skip_bad_images=config.skip_bad_images,
            progress=lambda n: observer.task_advanced(task, n),
        )
    finally:
        observer.task_finished(task)
    if result.bad:
        observer.message(
            f"skipped {len(result.bad)} unreadable {name} image(s) (--skip-bad-images), "
            f"e.g. {result.bad[0][0]}: {result.bad[0][1]}",
            level="warning",
        )
    return result


def initial_state(
    saved_state: dict[str, Any] | None, fingerprints: dict[str, str], weights_fp: str, run_dir: RunDir | None
) -> RunState:
    """A fresh RunState, or the saved one after checking the data and base are unchanged."""
    if saved_state is None:
        return RunState(data=fingerprints, base_weights=weights_fp)
    state = RunState.from_dict(saved_state)
    changed = [name for name in fingerprints if state.data.get(name) != fingerprints[name]]
    if changed:
        shown = " and ".join("labels CSV" if name == "labels" else f"{name} images" for name in changed)
        raise TlkitError(
            f"--resume {run_dir}: the {shown} changed since the run started; "
            f"resuming needs the same data — start a new run instead"
        )
    if state.base_weights and state.base_weights != weights_fp:
        raise TlkitError(
            f"--resume {run_dir}: the base's weights differ from the run's (the weights file "
            f"changed?); start a new run instead"
        )
    state.status = "running"
    return state


def class_balance(
    classes: list[str], train: DecodedSplit, val: DecodedSplit, config: TrainConfig, observer: TrainingObserver
) -> dict[int, float] | None:
    """Show the class distribution, warn on strong imbalance, return Keras class weights."""
    train_counts = imbalance.class_counts(train.labels, len(classes))
    val_counts = imbalance.class_counts(val.labels, len(classes))
    shown = ", ".join(f"{name} {t}/{v}" for name, t, v in zip(classes, train_counts, val_counts))
    observer.message(f"Classes (train/val images): {shown}")
    ratio = imbalance.imbalance_ratio(train_counts)
    weights = imbalance.class_weights(config.class_weight, train.labels, classes)
    if ratio >= imbalance.IMBALANCE_WARNING_RATIO:
        advice = "" if weights or config.multi_label else "; consider --class-weight balanced"
        observer.message(
            f"the training classes are imbalanced (largest/smallest = {ratio:.1f}×){advice}", level="warning"
        )
    if weights:
        observer.message("Class weights: " + ", ".join(f"{classes[i]} {w:.2f}" for i, w in weights.items()))
    return weights


__all__ = [
    "check_fine_tuning",
    "check_inputs",
    "check_scan",
    "class_balance",
    "decode",
    "initial_state",
    "preflight_disk",
    "preflight_pixels",
    "report_scan",
]


def warn_shared_copies(copies: list[tuple[Path, Path]], config: TrainConfig, observer: TrainingObserver) -> None:
    """One warning line when validation images have byte-identical copies in train (the hashes are
    already computed for the feature cache): validation accuracy would be flattered."""
    if not copies:
        return
    val, train = copies[0]
    root = Path(config.data)
    show = [p.relative_to(root).as_posix() if p.is_relative_to(root) else str(p) for p in (val, train)]
    observer.message(
        f"{len(copies)} validation image(s) are exact copies of training images (e.g. {show[0]} = {show[1]}), "
        f"so validation accuracy is flattered; `tlkit audit --data {config.data}` lists them and writes a cleaned "
        f"labels CSV",
        level="warning",
    )
