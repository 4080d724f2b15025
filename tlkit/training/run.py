"""One training run, from a resolved configuration to a complete run directory.

:class:`TrainingRun` holds everything a run works with — the configuration,
the specs, the classes, the decoded splits, the model and its parts, the
cached features and the checkpointed state — and does the work in clear steps::

    prepare()   scan the data, open or create the run directory, decode the images once,
                build the model, check a resumed run's data and weights (tlkit.training.prepare)
    features()  run the frozen base once per image (cached), when the head trains on features
    fit()       the head stage, then the optional fine-tuning stage (tlkit.training.stages.StageRunner)
    finish()    model.keras, metrics.json, plots, report — then the run is marked done
                (tlkit.training.finish)

Everything the user should see goes to a :class:`~tlkit.observer.TrainingObserver`.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from tlkit.config.options import TrainConfig, load_config_file, to_toml
from tlkit.config.resolve import resolve_augmentations
from tlkit.data import decode as datamod
from tlkit.data.labels_csv import csv_fingerprint, scan_for_config
from tlkit.data.mixing import batch_mixing_names, class_weight_vector
from tlkit.data.pipelines import make_dataset
from tlkit.errors import TlkitError, first_line, one_line
from tlkit.features.dataset import make_feature_dataset
from tlkit.features.fingerprint import shared_copies, weights_fingerprint
from tlkit.features.plan import FeaturePlan, RunFeatures, lookup_features, run_features
from tlkit.io.rundir import RunDir
from tlkit.io.tfenv import import_tensorflow
from tlkit.model import builder
from tlkit.observer import TrainingObserver
from tlkit.registry.manager import get_registry
from tlkit.tracking import runs as tracking
from tlkit.training import prepare as prep
from tlkit.training.distribute import make_distribution, precision_policy_kept, set_precision
from tlkit.training.finish import FinishInputs, TrainResult, finish_run
from tlkit.training.stages import HEAD, RunState, StageInputs, StageRunner, TrainingInterrupted, sigterm_stops_training
from tlkit.version import __version__

if TYPE_CHECKING:
    from tlkit.data.decode import DecodedSplit
    from tlkit.data.folders import DatasetScan
    from tlkit.model.builder import ModelParts
    from tlkit.training.distribute import Distribution

FEATURE_BATCH = 32  # images per feature-engine call: near-best throughput, bounded activation memory

#: How the head trains: on the frozen base's cached features, or end to end on pixels every epoch.
Route = Literal["features", "end-to-end"]


def training_path(config: TrainConfig) -> tuple[Route, str]:
    """``("features" | "end-to-end", why)``: how the head will be trained, in words for the user."""
    if not config.feature_cache:
        return "end-to-end", "--no-feature-cache: the base runs on every image every epoch"
    if config.augmentations and config.aug_views == 0:
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
        #: Warn when validation images are byte-identical copies of training images (an audit lists them instead).
        self.warns_of_shared_copies = True
        #: Describe the training (strategy, model and head, training path): False when a run is prepared
        #: only for its features (``tlkit audit``, ``tlkit tune``), where those lines would mislead.
        self.describes_training = True
        self._saved_state = saved_state
        route, route_reason = training_path(config)
        #: How the head trains ("features" or "end-to-end"), and why, in words for the user.
        self.route: Route = route
        self.route_reason: str = route_reason
        # Filled in by the steps (None until then):
        self.scan: DatasetScan | None = None
        self.classes: list[str] = []
        self.train_px: DecodedSplit | None = None  # pixels None until decoded (not when all features are cached)
        self.val_px: DecodedSplit | None = None
        self.parts: ModelParts | None = None
        self.state: RunState | None = None
        self.class_weight: dict[int, float] | None = None
        self.plan: FeaturePlan | None = None  # what keys this run's cached features
        self.run_features: RunFeatures | None = None  # on the features route, once found or computed
        self.train_time = 0.0
        self.distribution: Distribution | None = None  # made when the model is built
        self._worker_dir: RunDir | None = None  # a non-chief worker's temporary run directory
        self._mixing_shown = False  # the batch-mixing message is shown once per run, not once per stage
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
        assert self.distribution is not None, "prepare() first"
        return self.distribution.global_batch(self.config.batch_size, self.config.per_replica_batch)

    @property
    def steps(self) -> int:
        """Batches per training epoch."""
        assert self.train_px is not None, "prepare() first"
        return -(-len(self.train_px.labels) // self.global_batch)

    @property
    def head_on_features(self) -> bool:
        """True when the head stage trains the head alone on cached features."""
        return self.run_features is not None

    def head_datasets(self, first_pass: int):
        """(train, val) datasets of the head stage: cached features, or pixels end to end."""
        features = self.run_features
        if features is None:  # not self.head_on_features
            return self.pixel_datasets(first_pass)

        config, batch = self.config, self.global_batch
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
        assert self.train_px is not None and self.val_px is not None, "prepare() first"
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

        if not self._mixing_shown:
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
        """prepare → features → fit → finish, with the decoded pixels in a temporary folder; reported
        to the ``--track`` trackers (:mod:`tlkit.tracking`) once the run directory exists."""
        stopped = (KeyboardInterrupt, TrainingInterrupted)  # the tracked run ends "killed", not "failed"
        with (
            tempfile.TemporaryDirectory(prefix="tlkit-pixels-") as workdir,
            sigterm_stops_training(),
            self._process_state(),
            tracking.tracked(self.config, self.observer, interrupted=stopped) as tracks,
        ):
            self.observer = tracks.observer  # the run's own observer, then the trackers
            try:
                with self.timed("prepare"):
                    self.prepare(workdir)
                assert self.run_dir is not None and self.state is not None and self.distribution is not None
                chief, data = self.distribution.is_chief, self.state.data
                tracking.start_training(tracks, self.run_dir, self.config, data, resumed=self.resuming, chief=chief)
                with self.timed("features"):
                    self.features()
                with self.timed("fit"):
                    self.fit()
                try:
                    result = self.finish()
                except BaseException as exc:
                    self._mark_failed(exc)
                    raise
                return tracking.finish_training(tracks, result, self.val_px.files if self.val_px else [])
            except KeyboardInterrupt as stop:
                self._discard_unstarted_run_dir()
                where = f"resume with: tlkit train --resume {self.run_dir}" if self.run_dir else "nothing was saved"
                raise TrainingInterrupted.after(stop, f" before the first epoch finished; {where}") from None
            except BaseException:
                self._discard_unstarted_run_dir()
                raise

    def _discard_unstarted_run_dir(self) -> None:
        """Remove the run directory this (new) run made when it fails before its first checkpoint (a
        decode, disk or memory failure, a signal, a bug): a run that never saved an epoch leaves
        nothing that ``tlkit compare``/``report``/``--resume`` could take for a run."""
        if self.resuming or self.run_dir is None or self.run_dir.state_path.exists():
            return
        shutil.rmtree(self.run_dir.path, ignore_errors=True)
        self.run_dir = None

    def _mark_failed(self, exc: BaseException) -> None:
        """A run that trained but could not finish (a full disk while saving model.keras, a signal):
        its state says ``failed`` and why, so no command takes it for a finished run; ``--resume``
        finishes it from the last checkpoint."""
        if self.run_dir is None or self._worker_dir is not None:
            return
        try:
            state = self.run_dir.read_state() or {}
            self.run_dir.write_state({**state, "status": "failed", "error": one_line(exc)})
        except (OSError, TlkitError):  # the disk that failed the finish may fail this too: the state stays "running"
            pass

    @contextmanager
    def _process_state(self) -> Iterator[None]:
        """Leave the process as it was: Keras's global dtype policy back, a worker's temporary
        run directory removed."""
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
        config, observer = self.config, self.observer
        scan = scan_for_config(config)  # class folders, or the --labels CSV
        prep.check_scan(scan, config)
        self.scan, self.classes = scan, list(scan.classes)
        prep.report_scan(scan, observer)
        prep.check_inputs(scan, config)
        prep.preflight_pixels(scan, config, workdir, resuming=self.resuming)
        import_tensorflow()
        # The model is built before the run directory exists: a weights file that cannot be read
        # or does not fit the base (and every other refusal) leaves nothing behind.
        with self.timed("build_model"):
            self._build_model()
        assert self.parts is not None and self.plan is not None
        prep.check_fine_tuning(self.parts, config, self.base.name)
        prep.preflight_disk(
            scan, config, self.parts, self.plan, on_features=self.route == "features", resuming=self.resuming
        )
        if self.writes_run_dir and self.resuming:  # a resumed run's classes are checked before decoding
            self._open_run_dir()
            self.observer.message(f"Run directory: {self.run_dir} (resuming)")
        # Not decoded yet: a run whose features are all cached never decodes an image.
        self.train_px, self.val_px = (
            datamod.DecodedSplit(None, split.labels, list(split.files), []) for split in (scan.train, scan.val)
        )
        if self._features_may_all_be_cached():
            self._look_up_cached_features()
        if self.run_features is None:  # the images are needed: decode them
            with self.timed("decode"):
                self.train_px, self.val_px = (
                    prep.decode(name, split, config, workdir, observer)
                    for name, split in (("train", scan.train), ("val", scan.val))
                )
        with self.timed("hash_images"):
            fingerprints = {
                "train": self.plan.files_fp(self.train_px.files),
                "val": self.plan.files_fp(self.val_px.files),
            }
            if config.labels:  # the CSV decides labels and split: part of what identifies the data
                fingerprints["labels"] = csv_fingerprint(config.labels)
            train_files, val_files = self.train_px.files, self.val_px.files
            copies = shared_copies(
                train_files, self.plan.file_hashes(train_files), val_files, self.plan.file_hashes(val_files)
            )
        if self.warns_of_shared_copies:
            prep.warn_shared_copies(copies, config, observer)
        if self.writes_run_dir and not self.resuming:
            # Last: everything above may refuse or fail (decoding included) and a new run leaves nothing.
            self._open_run_dir()
            self.observer.message(f"Run directory: {self.run_dir}")
        self.state = prep.initial_state(self._saved_state, fingerprints, self.plan.weights_fp, self.run_dir)
        self.class_weight = prep.class_balance(self.classes, self.train_px, self.val_px, config, observer)

    def _features_may_all_be_cached(self) -> bool:
        """True when only the head stage's cached features may be needed: nothing else (end-to-end
        training, fine-tuning) needs the images, so the cache is worth looking in before decoding."""
        saved_stage = (self._saved_state or {}).get("stage", HEAD)
        return self.route == "features" and saved_stage == HEAD and not self.config.fine_tune_epochs

    def _look_up_cached_features(self) -> None:
        """Set :attr:`run_features` when the train and val features are all in the cache."""
        train, val, plan = self.train_px, self.val_px, self.plan
        assert train is not None and val is not None and plan is not None
        with self.timed("hash_images"):
            self.run_features = lookup_features(
                plan, {"train": (train.files, train.labels), "val": (val.files, val.labels)}
            )

    def _open_run_dir(self) -> None:
        assert self.distribution is not None
        if not self.distribution.is_chief:
            self._open_worker_dir()
            return
        if self.run_dir is None:
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

    def _build_model(self) -> None:
        import keras  # lazy: Keras and TensorFlow only when the model is built

        config = self.config
        # The strategy first: a multi-worker strategy must exist before other TensorFlow work.
        self.distribution = make_distribution(config.strategy)
        if self.describes_training:
            self.observer.message(self.distribution.describe(config.batch_size, config.per_replica_batch, config.lr))
        set_precision(config.precision)
        keras.utils.set_random_seed(config.seed)
        if config.deterministic:
            import tensorflow as tf  # lazy: Keras and TensorFlow only when the model is built

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
            reason = first_line(str(exc), 200)
            raise TlkitError(
                f"building the model failed ({type(exc).__name__}: {reason}) in one of: {', '.join(parts)}; "
                f"check the plugin's build function (tlkit --debug train ... shows where)"
            ) from exc
        model = self.parts.model
        trainable = sum(int(keras.ops.size(w)) for w in model.trainable_weights)
        shown_weights = config.weights
        if weights == "imagenet":  # a plugin's pretrained weights may be no ImageNet's (DINOv2's)
            source = self.base.weights_source.split(" (")[0]
            shown_weights = f"pretrained, {source}" if source else "ImageNet"
        if self.describes_training:
            self.observer.message(
                f"Model: {self.base.name} (frozen, weights {shown_weights}, {config.image_size} px) + "
                f"{self.head.name} head: {model.count_params():,} parameters, {trainable:,} trainable"
            )
        else:
            self.observer.message(f"Base: {self.base.name} (frozen, weights {shown_weights}, {config.image_size} px)")
        self.plan = FeaturePlan(
            self.parts,
            base_name=self.base.name,
            image_size=config.image_size,
            engine_choice=config.engine,
            views=config.aug_views,
            augmentations=list(config.augmentations),
            seed=config.seed,
            weights_fp=weights_fingerprint(self.parts.backbone),
            shard=self.distribution.shard,
            dtype=config.feature_dtype,
        )

    # -- step 2: features ----------------------------------------------------
    def features(self) -> None:
        """Compute (or reuse) the frozen base's features when the head stage can train on them."""
        assert self.state is not None and self.plan is not None, "prepare() first"
        if self.describes_training:
            self.observer.message(f"Training path: {self.route} — {self.route_reason}")
        if self.route != "features" or self.state.stage != HEAD:
            return
        observer = self.observer

        def progress(label: str, total: int):
            task = f"computing {label}"
            observer.task_started(task, total)
            return lambda n: observer.task_advanced(task, n)

        result = self.run_features  # already found in the cache by prepare()
        if result is None:
            try:
                result = run_features(
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
        started = time.perf_counter()
        self.state = StageRunner(self.stage_inputs()).run_stages()
        self.train_time = time.perf_counter() - started

    def stage_inputs(self) -> StageInputs:
        """What the stages need of this (prepared) run."""
        assert self.parts is not None and self.distribution is not None, "prepare() first"
        assert self.run_dir is not None and self.state is not None
        return StageInputs(
            config=self.config,
            parts=self.parts,
            distribution=self.distribution,
            run_dir=self.run_dir,
            observer=self.observer,
            state=self.state,
            num_classes=self.num_classes,
            steps=self.steps,
            head_on_features=self.head_on_features,
            head_datasets=self.head_datasets,
            pixel_datasets=self.pixel_datasets,
            class_weight=self.fit_class_weight,
            timings=self.timings,
        )

    # -- step 4: finish ------------------------------------------------------
    def finish(self) -> TrainResult:
        """Write model.keras and metrics.json, mark the run done, draw the plots, write the report."""
        assert self.run_dir is not None and self.parts is not None and self.state is not None, "fit() first"
        assert self.train_px is not None and self.val_px is not None
        return finish_run(
            FinishInputs(
                config=self.config,
                run_dir=self.run_dir,
                parts=self.parts,
                state=self.state,
                classes=self.classes,
                train_px=self.train_px,
                val_px=self.val_px,
                run_features=self.run_features,
                route=self.route,
                route_reason=self.route_reason,
                title=f"{self.base.name} + {self.head.name}",
                train_time=self.train_time,
                timings=self.timings,
                observer=self.observer,
                timed=self.timed,
                batch_size=FEATURE_BATCH,
            )
        )


__all__ = ["FEATURE_BATCH", "Route", "TrainResult", "TrainingRun", "training_path"]
