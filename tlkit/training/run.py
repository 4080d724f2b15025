"""One training run, from a resolved configuration to a complete run directory.

:class:`TrainingRun` holds everything a run works with — the configuration,
the specs, the classes, the decoded splits, the model and its parts, the
cached features and the checkpointed state — and does the work in clear steps::

    prepare()   scan the data, open or create the run directory, decode the images once,
                build the model, check a resumed run's data and weights
    features()  run the frozen base once per image (cached), when the head trains on features
    fit()       the head stage, then the optional fine-tuning stage (tlkit.training.stages.StageRunner)
    finish()    model.keras, metrics.json, plots, report — then the run is marked done

Everything the user should see goes to a :class:`~tlkit.observer.TrainingObserver`.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tlkit.config.options import TrainConfig, load_config_file, to_toml
from tlkit.errors import TlkitError
from tlkit.io.files import atomic_path
from tlkit.io.rundir import RunDir
from tlkit.observer import TrainingObserver
from tlkit.registry.manager import get_registry

FEATURE_BATCH = 32  # images per feature-engine call: near-best throughput, bounded activation memory


@dataclass
class TrainResult:
    """What ``tlkit.train`` produced: where the run went and how it did."""

    run_dir: Path
    config: TrainConfig
    classes: list[str]
    history: dict[str, list[float]]
    metrics: dict[str, Any]
    model_path: Path
    plots: list[Path] = field(default_factory=list)
    report: Path | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_dir": str(self.run_dir),
            "model": str(self.model_path),
            "plots": [str(p) for p in self.plots],
            "report": str(self.report) if self.report else None,
            "classes": list(self.classes),
            "metrics": self.metrics,
            "config": self.config.to_dict(),
        }


def training_path(config: TrainConfig) -> tuple[str, str]:
    """``("features" | "end-to-end", why)``: how the head will be trained, in words for the user."""
    if not config.feature_cache:
        return "end-to-end", "--no-feature-cache: the base runs on every image every epoch"
    if config.augmentations and config.aug_views == 0:
        from tlkit.data.mixing import batch_mixing_names

        if batch_mixing_names(config.augmentations):
            return "end-to-end", "batch mixing (mixup, cutmix) gives the base new mixed images every step"
        return "end-to-end", (
            "augmentations change the base's input every epoch, so its features cannot be cached; "
            "--aug-views K caches K augmented views per image instead"
        )
    if config.augmentations:
        return "features", (
            f"{config.aug_views} augmented view(s) per training image are computed once and cached; "
            f"epoch e trains on view e mod {config.aug_views}"
        )
    return "features", "the base is frozen: its features are computed once per image and cached"


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
        return True
    except ValueError:
        return False


class TrainingRun:
    """A training run: its state, its steps, and the run directory it writes.

    Make one with :meth:`start` (a new run from a resolved config) or
    :meth:`resume` (an interrupted run), then call :meth:`execute`.
    """

    def __init__(
        self,
        config: TrainConfig,
        *,
        observer: TrainingObserver | None = None,
        run_dir: RunDir | None = None,
        saved_state: dict[str, Any] | None = None,
    ) -> None:
        registry = get_registry()
        self.config = config
        self.observer = observer or TrainingObserver()
        self.base = registry.base(config.base)
        self.head = registry.head(config.head)
        self.run_dir = run_dir  # None until prepare() creates it (a new run)
        self.resuming = run_dir is not None
        #: False: prepare() makes no run directory (``tlkit lr-find`` needs only the model and features).
        self.writes_run_dir = True
        self._saved_state = saved_state
        self.path, self.path_reason = training_path(config)
        # Filled in by the steps:
        self.scan: Any = None
        self.classes: list[str] = []
        self.train_px: Any = None
        self.val_px: Any = None
        self.parts: Any = None
        self.state: Any = None
        self.class_weight: dict[int, float] | None = None
        self.plan: Any = None  # tlkit.features.store.FeaturePlan: what keys this run's cached features
        self.run_features: Any = None  # tlkit.features.store.RunFeatures, on the features path
        self.train_time = 0.0
        self.distribution: Any = None  # tlkit.training.distribute.Distribution, made when the model is built
        self._worker_dir: RunDir | None = None  # a non-chief worker's temporary run directory
        #: Seconds per phase (and per epoch), written to metrics.json for benchmarks and curious users.
        self.timings: dict[str, Any] = {}

    # -- construction --------------------------------------------------------
    @classmethod
    def start(cls, config: TrainConfig, observer: TrainingObserver | None = None) -> TrainingRun:
        """A new run of a resolved config (see :func:`tlkit.config.resolve.resolve_config`)."""
        return cls(config, observer=observer)

    @classmethod
    def resume(cls, path: str | Path, observer: TrainingObserver | None = None) -> TrainingRun:
        """Continue the interrupted run in ``path`` with its own config and checkpoint."""
        run_dir, state = RunDir.open_for_resume(path)
        config = load_config_file(run_dir.config_path)
        config.validate()
        return cls(config, observer=observer, run_dir=run_dir, saved_state=state)

    # -- derived -------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def global_batch(self) -> int:
        """Images per training step across all replicas (``--batch-size`` × replicas unless ``--global-batch``)."""
        return self.distribution.global_batch(self.config.batch_size, self.config.per_replica_batch)

    @property
    def steps(self) -> int:
        """Batches per training epoch."""
        return -(-len(self.train_px.labels) // self.global_batch)

    @property
    def head_on_features(self) -> bool:
        """True when the head stage trains the head alone on cached features."""
        return self.run_features is not None

    def head_datasets(self, first_pass: int):
        """(train, val) datasets of the head stage: cached features, or pixels end to end."""
        if not self.head_on_features:
            return self.pixel_datasets(first_pass)
        from tlkit.features.store import make_feature_dataset

        config, features, batch = self.config, self.run_features, self.global_batch
        train = make_feature_dataset(
            features.train,
            batch_size=batch,
            num_classes=self.num_classes,
            shuffle=True,
            seed=config.seed,
            first_pass=first_pass,
        )
        val = make_feature_dataset(
            features.val, batch_size=batch, num_classes=self.num_classes, shuffle=False, seed=config.seed
        )
        return train, val

    def pixel_datasets(self, first_pass: int):
        """(train, val) datasets of decoded pixels, for end-to-end training and fine-tuning."""
        from tlkit.data.images import make_dataset

        config, batch = self.config, self.global_batch
        train = make_dataset(
            self.train_px,
            batch_size=batch,
            num_classes=self.num_classes,
            shuffle=True,
            seed=config.seed,
            first_pass=first_pass,
            **self._batch_mixing(),
        )
        val = make_dataset(self.val_px, batch_size=batch, num_classes=self.num_classes, shuffle=False, seed=config.seed)
        return train, val

    def _batch_mixing(self) -> dict[str, Any]:
        """The training batches' mixing (mixup, cutmix; :mod:`tlkit.data.mixing`): the mixers, and the class
        weights as per-image sample weights of the soft labels (Keras's ``class_weight`` is then off)."""
        mixers = self.parts.mixers if self.parts is not None else []
        if not mixers:
            return {}
        from tlkit.data.mixing import batch_mixing_names, class_weight_vector

        if not getattr(self, "_mixing_shown", False):  # once per run, not once per stage
            self._mixing_shown = True
            names = ", ".join(batch_mixing_names(self.config.augmentations))
            self.observer.message(
                f"Batch mixing ({names}): training batches get soft labels; training metrics use each "
                f"label's argmax, validation is unmixed"
            )
        return {"mixers": mixers, "class_weights": class_weight_vector(self.class_weight, self.num_classes)}

    @property
    def fit_class_weight(self) -> dict[int, float] | None:
        """Keras's ``class_weight`` for ``fit``: None when mixed batches carry the weights themselves."""
        return None if self.parts is not None and self.parts.mixers else self.class_weight

    # -- the whole run -------------------------------------------------------
    def execute(self) -> TrainResult:
        """prepare → features → fit → finish, with the decoded pixels in a temporary folder."""
        from tlkit.training.stages import TrainingInterrupted, sigterm_stops_training

        with (
            tempfile.TemporaryDirectory(prefix="tlkit-pixels-") as workdir,
            sigterm_stops_training(),
            self._process_state(),
        ):
            try:
                with self.timed("prepare"):
                    try:
                        self.prepare(workdir)
                    except TlkitError:
                        self._discard_unstarted_run_dir()
                        raise
                with self.timed("features"):
                    self.features()
                with self.timed("fit"):
                    self.fit()
                return self.finish()
            except KeyboardInterrupt as stop:
                where = f"resume with: tlkit train --resume {self.run_dir}" if self.run_dir else "nothing was saved"
                raise TrainingInterrupted.after(stop, f" before the first epoch finished; {where}") from None

    def _discard_unstarted_run_dir(self) -> None:
        """Remove the run directory this (new) run made when it fails before training started
        (e.g. unreadable images found while decoding): a run that fails to start leaves nothing."""
        if self.resuming or self.run_dir is None or self.run_dir.state_path.exists():
            return
        shutil.rmtree(self.run_dir.path, ignore_errors=True)
        self.run_dir = None

    @contextmanager
    def _process_state(self) -> Iterator[None]:
        """Leave the process as it was: Keras's global dtype policy back, a worker's temporary
        run directory removed."""
        from tlkit.training.distribute import precision_policy_kept

        try:
            with precision_policy_kept():
                yield
        finally:
            if self._worker_dir is not None:
                shutil.rmtree(self._worker_dir.path, ignore_errors=True)

    @contextmanager
    def timed(self, phase: str) -> Iterator[None]:
        """Add the wall time of the block to ``timings[phase]``."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.timings[phase] = round(self.timings.get(phase, 0.0) + time.perf_counter() - started, 3)

    # -- step 1: prepare -----------------------------------------------------
    def prepare(self, workdir: str | Path) -> None:
        """Scan and decode the data, open the run directory, build the model and the state."""
        from tlkit.data import images as datamod
        from tlkit.data.labels_csv import csv_fingerprint, scan_for_config
        from tlkit.io.tfenv import import_tensorflow

        config = self.config
        scan = scan_for_config(config)  # class folders, or the --labels CSV
        if len(scan.classes) < 2:
            raise TlkitError(
                f"{scan.root}/train holds only one class ({scan.classes[0]}); a classifier needs 2 or more"
            )
        if _inside(Path(config.output), scan.root):
            raise TlkitError(
                f"--output {config.output} is inside the data folder {scan.root}; "
                f"tlkit never writes into the data folder — choose another --output"
            )
        self.scan, self.classes = scan, list(scan.classes)
        self._report_scan()
        self._preflight_pixels(workdir)
        import_tensorflow()
        # The model is built before the run directory exists: a weights file that cannot be read
        # or does not fit the base (and every other refusal) leaves nothing behind.
        with self.timed("build_model"):
            self._build_model()
        self._preflight_disk()
        if self.writes_run_dir:
            self._open_run_dir()
            self.observer.message(f"Run directory: {self.run_dir}" + (" (resuming)" if self.resuming else ""))
        # Not decoded yet: a run whose features are all cached never decodes an image.
        self.train_px, self.val_px = (
            datamod.DecodedSplit(None, split.labels, list(split.files), []) for split in (scan.train, scan.val)
        )
        if self._needs_pixels():
            with self.timed("decode"):
                self.train_px, self.val_px = (
                    self._decode(name, split, workdir) for name, split in (("train", scan.train), ("val", scan.val))
                )
        with self.timed("hash_images"):
            fingerprints = {
                "train": self.plan.files_fp(self.train_px.files),
                "val": self.plan.files_fp(self.val_px.files),
            }
            if config.labels:  # the CSV decides labels and split: part of what identifies the data
                fingerprints["labels"] = csv_fingerprint(config.labels)
        self.state = self._initial_state(fingerprints)
        self.class_weight = self._class_balance()

    def _needs_pixels(self) -> bool:
        """False only when the head trains on features that are all in the cache, and nothing
        else (end-to-end training, fine-tuning) needs the images."""
        from tlkit.features.store import lookup_features
        from tlkit.training.stages import HEAD

        saved_stage = (self._saved_state or {}).get("stage", HEAD)
        if self.path != "features" or saved_stage != HEAD or self.config.fine_tune_epochs:
            return True
        with self.timed("hash_images"):
            self.run_features = lookup_features(
                self.plan,
                {"train": (self.train_px.files, self.train_px.labels), "val": (self.val_px.files, self.val_px.labels)},
            )
        return self.run_features is None

    def _report_scan(self) -> None:
        scan = self.scan
        skipped = []
        if scan.skipped_hidden:
            skipped.append(f"{scan.skipped_hidden} hidden")
        if scan.skipped_other:
            skipped.append(f"{scan.skipped_other} non-image")
        self.observer.message(
            f"Data: {len(scan.classes)} classes, {len(scan.train.files)} train / {len(scan.val.files)} val "
            f"images (validation: {scan.val_source})" + (f"; skipped {' and '.join(skipped)} files" if skipped else "")
        )

    def _preflight_pixels(self, workdir: str | Path) -> None:
        """Refuse, before anything is decoded, an image size whose pixels or activations cannot fit."""
        from tlkit.config import preflight

        preflight.check_pixels(
            len(self.scan.train.files) + len(self.scan.val.files),
            self.config.image_size,
            self.config.batch_size,
            workdir=workdir,
        )
        if not self.resuming:  # the least a run directory needs (the model's size is known only once built)
            preflight.check_run_dir_space(self.config.output, params=0, trainable=0)

    def _preflight_disk(self) -> None:
        """Refuse, before the run directory is made, a run whose files or features cannot fit on disk."""
        import keras

        from tlkit.config import preflight
        from tlkit.features.store import cache_root

        if not self.resuming:
            preflight.check_output(self.config.output)
            model = self.parts.model
            preflight.check_run_dir_space(
                self.config.output,
                params=model.count_params(),
                trainable=sum(int(keras.ops.size(w)) for w in model.trainable_weights),
            )
        try:
            feature_shape = tuple(int(d) for d in self.parts.cached_model.output.shape[1:])
        except (AttributeError, TypeError, ValueError):  # no static output shape: nothing to estimate
            feature_shape = ()
        if self.path == "features" and feature_shape:
            views = max(self.config.aug_views, 1)
            preflight.check_feature_space(
                cache_root(),
                num_images=len(self.scan.train.files) * views + len(self.scan.val.files),
                views=1,
                feature_shape=feature_shape,
            )

    def _open_run_dir(self) -> None:
        if not self.distribution.is_chief:
            self._open_worker_dir()
            return
        if self.run_dir is None:
            from tlkit.version import __version__

            try:
                self.run_dir = RunDir.create(self.config.output, self.config.base, self.config.head)
            except OSError as exc:  # e.g. a read-only mount, a full disk, a race with another user
                raise TlkitError(
                    f"--output {self.config.output}: cannot create the run directory there "
                    f"({exc.strerror or exc}); pass a folder you can write to"
                ) from None
            try:
                provenance = {"version": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
                self.run_dir.write_config(to_toml(self.config, provenance))
                self.run_dir.write_classes(self.classes)
            except OSError as exc:
                # The folder was made a moment ago by this run and holds nothing of value: a run
                # that fails to start leaves nothing (no config.toml a later --resume would trust).
                shutil.rmtree(self.run_dir.path, ignore_errors=True)
                self.run_dir = None
                raise TlkitError(
                    f"--output {self.config.output}: cannot write the run's files there "
                    f"({exc.strerror or exc}); free some space or pass another --output"
                ) from None
            return
        known = self.run_dir.read_classes()
        if known != self.classes:
            raise TlkitError(
                f"--resume {self.run_dir}: the data's classes changed since the run started "
                f"(run: {', '.join(known)}; now: {', '.join(self.classes)}); start a new run instead"
            )

    def _open_worker_dir(self) -> None:
        """A non-chief worker writes into a temporary run directory (removed at the end): only the
        chief writes the real one.  Resuming, it starts from a copy of the run's checkpoints."""
        worker_dir = RunDir(Path(tempfile.mkdtemp(prefix="tlkit-worker-")))
        if self.run_dir is not None and self.run_dir.checkpoints_dir.is_dir():
            shutil.copytree(self.run_dir.checkpoints_dir, worker_dir.checkpoints_dir)
        worker_dir.write_config(to_toml(self.config))
        worker_dir.write_classes(self.classes)
        self.run_dir, self._worker_dir = worker_dir, worker_dir

    def _decode(self, name: str, split: Any, workdir: str | Path):
        from tlkit.data import images as datamod

        task = f"decoding {name} images"
        self.observer.task_started(task, len(split.files))
        try:
            result = datamod.decode_split(
                split,
                self.config.image_size,
                workdir,
                name=name,
                skip_bad_images=self.config.skip_bad_images,
                progress=lambda n: self.observer.task_advanced(task, n),
            )
        finally:
            self.observer.task_finished(task)
        if result.bad:
            self.observer.message(
                f"skipped {len(result.bad)} unreadable {name} image(s) (--skip-bad-images), "
                f"e.g. {result.bad[0][0]}: {result.bad[0][1]}",
                level="warning",
            )
        return result

    def _build_model(self) -> None:
        import keras

        from tlkit.config.resolve import resolve_augmentations
        from tlkit.features import store as features
        from tlkit.model import builder
        from tlkit.training.distribute import make_distribution, set_precision

        config = self.config
        # The strategy first: a multi-worker strategy must exist before other TensorFlow work.
        self.distribution = make_distribution(config.strategy)
        self.observer.message(self.distribution.describe(config.batch_size, config.per_replica_batch, config.lr))
        set_precision(config.precision)
        keras.utils.set_random_seed(config.seed)
        if config.deterministic:
            import tensorflow as tf

            tf.config.experimental.enable_op_determinism()
        weights = None if config.weights == "none" else config.weights
        augmentations = resolve_augmentations(config.augmentations)
        try:
            with self.distribution.strategy.scope():
                self.parts = builder.assemble(
                    self.base,
                    self.head,
                    self.num_classes,
                    image_size=config.image_size,
                    weights=weights,
                    head_params=config.head_params,
                    augmentations=augmentations,
                    seed=config.seed,
                    multi_label=config.multi_label,
                )
        except (TlkitError, MemoryError):
            raise
        except Exception as exc:  # noqa: BLE001 - a plugin's build code failed: name the plugins
            parts = [
                f"base {self.base.name!r} ({self.base.plugin or 'tlkit'})",
                f"head {self.head.name!r} ({self.head.plugin or 'tlkit'})",
            ]
            parts += [f"augmentation {a.spec.name!r} ({a.spec.plugin or 'tlkit'})" for a in augmentations]
            reason = (str(exc).strip().splitlines() or [""])[0][:200]
            raise TlkitError(
                f"building the model failed ({type(exc).__name__}: {reason}) in one of: {', '.join(parts)}; "
                f"check the plugin's build function (tlkit --debug train ... shows where)"
            ) from exc
        model = self.parts.model
        trainable = sum(int(keras.ops.size(w)) for w in model.trainable_weights)
        shown_weights = "ImageNet" if weights == "imagenet" else config.weights
        self.observer.message(
            f"Model: {self.base.name} (frozen, weights {shown_weights}, {config.image_size} px) + "
            f"{self.head.name} head: {model.count_params():,} parameters, {trainable:,} trainable"
        )
        self.plan = features.FeaturePlan(
            self.parts,
            base_name=self.base.name,
            image_size=config.image_size,
            engine_choice=config.engine,
            views=config.aug_views,
            augmentations=list(config.augmentations),
            seed=config.seed,
            weights_fp=features.weights_fingerprint(self.parts.backbone),
            shard=self.distribution.shard,
            dtype=config.feature_dtype,
        )

    def _initial_state(self, fingerprints: dict[str, str]):
        """A fresh RunState, or the saved one after checking the data and base are unchanged."""
        from tlkit.training.stages import RunState

        if self._saved_state is None:
            return RunState(data=fingerprints, base_weights=self.plan.weights_fp)
        state = RunState.from_dict(self._saved_state)
        changed = [name for name in fingerprints if state.data.get(name) != fingerprints[name]]
        if changed:
            shown = " and ".join("labels CSV" if name == "labels" else f"{name} images" for name in changed)
            raise TlkitError(
                f"--resume {self.run_dir}: the {shown} changed since the run started; "
                f"resuming needs the same data — start a new run instead"
            )
        if state.base_weights and state.base_weights != self.plan.weights_fp:
            raise TlkitError(
                f"--resume {self.run_dir}: the base's weights differ from the run's (the weights file "
                f"changed?); start a new run instead"
            )
        state.status = "running"
        return state

    def _class_balance(self) -> dict[int, float] | None:
        """Show the class distribution, warn on strong imbalance, return Keras class weights."""
        from tlkit.data import imbalance

        classes = self.classes
        train_counts = imbalance.class_counts(self.train_px.labels, len(classes))
        val_counts = imbalance.class_counts(self.val_px.labels, len(classes))
        shown = ", ".join(f"{name} {t}/{v}" for name, t, v in zip(classes, train_counts, val_counts))
        self.observer.message(f"Classes (train/val images): {shown}")
        ratio = imbalance.imbalance_ratio(train_counts)
        weights = imbalance.class_weights(self.config.class_weight, self.train_px.labels, classes)
        if ratio >= imbalance.IMBALANCE_WARNING_RATIO:
            advice = "" if weights or self.config.multi_label else "; consider --class-weight balanced"
            self.observer.message(
                f"the training classes are imbalanced (largest/smallest = {ratio:.1f}×){advice}", level="warning"
            )
        if weights:
            self.observer.message("Class weights: " + ", ".join(f"{classes[i]} {w:.2f}" for i, w in weights.items()))
        return weights

    # -- step 2: features ----------------------------------------------------
    def features(self) -> None:
        """Compute (or reuse) the frozen base's features when the head stage can train on them."""
        from tlkit.features import store as features
        from tlkit.training.stages import HEAD

        self.observer.message(f"Training path: {self.path} — {self.path_reason}")
        if self.path != "features" or self.state.stage != HEAD:
            return
        observer = self.observer

        def progress(label: str, total: int):
            task = f"computing {label}"
            observer.task_started(task, total)
            return lambda n: observer.task_advanced(task, n)

        result = self.run_features  # already found in the cache by prepare()
        if result is None:
            try:
                result = features.run_features(
                    self.plan, {"train": self.train_px, "val": self.val_px}, batch_size=FEATURE_BATCH, progress=progress
                )
            finally:
                for name in ("train", "val"):
                    observer.task_finished(f"computing {name} features")
        summary = result.summary()
        for name in ("train", "val"):
            info = summary[name]
            if info["cache"] == "hit":
                observer.message(f"Features ({name}): reused from the cache ({info['entry']})")
            else:
                observer.message(
                    f"Features ({name}): computed with {result.engine} in {info['seconds']:.1f} s "
                    f"({info['images_per_s']} images/s) and cached"
                )
        if result.engine != "cache":
            observer.message(f"Feature engine: {result.engine_reason}")
        self.run_features = result

    # -- step 3: fit ---------------------------------------------------------
    def fit(self) -> None:
        """Train the remaining stages (checkpointed every epoch); the best weights end in the model."""
        from tlkit.training.stages import StageRunner

        started = time.perf_counter()
        self.state = StageRunner(self).run_stages()
        self.train_time = time.perf_counter() - started

    # -- step 4: finish ------------------------------------------------------
    def finish(self) -> TrainResult:
        """Write model.keras and metrics.json, mark the run done, draw the plots, write the report."""
        from tlkit.evaluation.figures import plot_history
        from tlkit.training.history import history_from_rows

        run_dir, state = self.run_dir, self.state
        with self.timed("save_model"):
            with atomic_path(run_dir.model_path, suffix=".keras") as tmp:
                _portable(self.parts.model).save(tmp)
        history = history_from_rows(state.rows)
        with self.timed("plots"):
            plots = plot_history(
                history,
                run_dir.plots_dir,
                title=f"{self.base.name} + {self.head.name}",
                stages=[row["stage"] for row in state.rows],
                best_epoch=state.best_epoch,
            )
        metrics = self._metrics(history)
        run_dir.write_metrics(metrics)
        self._write_thresholds()
        state.status = "done"  # only now: a run killed before this point can still be resumed
        run_dir.write_state(state.as_dict())
        report = self._write_report()
        return TrainResult(
            run_dir=run_dir.path,
            config=self.config,
            classes=list(self.classes),
            history=history,
            metrics=metrics,
            model_path=run_dir.model_path,
            plots=plots,
            report=report,
        )

    def _metrics(self, history: dict[str, list[float]]) -> dict[str, Any]:
        config, state = self.config, self.state

        def at_best(key: str):
            values = history.get(key)
            return values[state.best_epoch - 1] if values and state.best_epoch else None

        return {
            "monitor": config.monitor,
            "best_epoch": state.best_epoch,
            "best_stage": state.best_stage,
            "best_value": state.best_value,
            "best_val_accuracy": at_best("val_accuracy"),
            "best_val_loss": at_best("val_loss"),
            "best_val_f1": at_best("val_f1"),
            "final": {key: values[-1] for key, values in history.items()},
            "epochs_run": state.epoch,
            "head_epochs": state.head_epochs,
            "fine_tune_epochs": state.epoch - state.head_epochs,
            "stopped_early": state.stopped_early,
            "train_time_s": round(self.train_time, 2),
            "num_classes": self.num_classes,
            "num_train": int(len(self.train_px.labels)),
            "num_val": int(len(self.val_px.labels)),
            "skipped_bad_images": [str(p) for p, _ in self.train_px.bad + self.val_px.bad],
            "saved_model": f"best epoch by {config.monitor} (epoch {state.best_epoch}, {state.best_stage} stage)",
            "training_path": self.path,
            "training_path_reason": self.path_reason,
            "features": self.run_features.summary() if self.run_features is not None else None,
            "timings": self.timings,  # seconds; the report's own time is not in it (it comes after)
        }

    def _validation_probabilities(self) -> dict[str, Any] | None:
        """The trained model's probabilities on the validation images, by path, from the cached
        features and the head alone (equal to the model's own up to the engine's ~1e-6) — so the
        end-of-training evaluation decodes no image and runs no base."""
        from tlkit.features.store import head_probabilities

        if self.run_features is None:
            return None
        probabilities = head_probabilities(self.parts.head_tail, self.run_features.val)
        return {str(path): row for path, row in zip(self.val_px.files, probabilities)}

    def _write_thresholds(self) -> None:
        """``--multi-label``: each label's decision threshold, into the run directory (tuned on the
        validation images with ``--threshold tuned``)."""
        if not self.config.multi_label:
            return
        from tlkit.evaluation.multilabel import thresholds_for_run

        tuned = self.config.threshold == "tuned"
        probs = None
        if tuned:
            import numpy as np

            from tlkit.features.store import head_probabilities
            from tlkit.inference.prediction import Predictor

            if self.run_features is not None:
                probs = head_probabilities(self.parts.head_tail, self.run_features.val)
            else:
                run, pixels = Predictor(self.parts.model), self.val_px.pixels
                probs = np.concatenate(
                    [run(pixels[i : i + FEATURE_BATCH]) for i in range(0, len(pixels), FEATURE_BATCH)]
                )
        values = thresholds_for_run(self.config.threshold, probs, self.val_px.labels, self.num_classes)
        source = "tuned: each label's F1 maximised on the validation images" if tuned else "--threshold"
        self.run_dir.write_thresholds(dict(zip(self.classes, values.tolist())), source)
        if tuned:
            shown = ", ".join(f"{name} {value:.2f}" for name, value in zip(self.classes, values))
            self.observer.message(f"Thresholds (tuned on validation): {shown}")

    def _write_report(self) -> Path | None:
        """The HTML report; a problem there never fails a finished training."""
        from tlkit.evaluation.report import write_report

        try:
            with self.timed("evaluate_and_report"):
                return write_report(
                    self.run_dir.path, model=self.parts.model, probabilities=self._validation_probabilities()
                )
        except Exception as exc:  # noqa: BLE001 - reported, training already succeeded
            self.observer.message(
                f"could not write the report ({type(exc).__name__}: {exc}); try: tlkit report {self.run_dir}",
                level="warning",
            )
            return None


def _portable(model):
    """An uncompiled copy of ``model`` with the same weights: no optimizer (and no tlkit-only
    schedule) inside ``model.keras``, so it loads cleanly with plain Keras."""
    import keras

    def without_compile(obj):
        # A nested model that was trained alone (the head on cached features)
        # carries its compile config; drop it everywhere.
        if isinstance(obj, dict):
            return {k: without_compile(v) for k, v in obj.items() if k != "compile_config"}
        if isinstance(obj, list):
            return [without_compile(v) for v in obj]
        return obj

    fresh = keras.Model.from_config(without_compile(model.get_config()))
    fresh.set_weights(model.get_weights())
    return fresh


__all__ = ["FEATURE_BATCH", "TrainResult", "TrainingRun", "training_path"]
