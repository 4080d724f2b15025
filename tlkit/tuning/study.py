"""``tlkit.tune``: an Optuna study whose trials train heads on cached features (see :mod:`tlkit.tuning.trial`).

Everything is checked before any work: the search space, the trial count and time limit, the
pruner, the output folder (writable, not inside the data) and the storage URL.  A new study gets
its folder ``<output>/<YYYYmmdd-HHMMSS>-<study>/`` (never reused) holding :data:`STUDY_JSON` (the
base configuration and the space, what ``--resume`` reads) and, unless ``storage`` names another,
the Optuna RDB storage :data:`STUDY_DB`.  ``storage`` is any Optuna storage URL (``sqlite:///``,
``postgresql://``, ``mysql://``...) or ``journal:PATH`` (a journal file, for shared filesystems);
processes running the same study on one storage share it and stop together at ``trials``
finished (complete or pruned) trials in all.  Each trial is committed to the storage when it
ends, so Ctrl-C, SIGTERM or SIGKILL lose only the trial that was running.

At the end, the best trial's configuration and the base configuration are each trained on all the
train features and scored once on val (:func:`tlkit.tuning.trial.score_on_val`).
"""

from __future__ import annotations

import json
import os
import re
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tlkit.config.options import TrainConfig, config_from_mapping
from tlkit.config.preflight import check_output
from tlkit.config.resolve import resolve_config
from tlkit.errors import TlkitError, first_line
from tlkit.io.files import write_json
from tlkit.observer import TrainingObserver
from tlkit.tracking.runs import finish_study, start_study, tracked
from tlkit.training.stages import sigterm_stops_training
from tlkit.tuning.result import TrialRecord, TuneResult
from tlkit.tuning.space import Dimension, config_for, parse_search, sample, space_from_table
from tlkit.tuning.trial import DEFAULT_HOLDOUT, StudyFeatures, compute_features, feature_key, run_trial, score_on_val

DEFAULT_OUTPUT = "tune"
STUDY_JSON = "study.json"
STUDY_DB = "study.db"
PRUNERS = ("median", "hyperband", "none")
HEARTBEAT_S = 10  # RDB storages: a running trial's heartbeat; one silent for GRACE_S was killed
GRACE_S = 60
STORAGE_TRIES = 5  # opening a storage that another process is creating
_STATES = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed", "RUNNING": "running"}


class _Surplus(Exception):
    """A trial started after the study reached its trial count in another process."""


def check_tune_options(*, trials: int, timeout: float | None, pruner: str, holdout: float) -> None:
    """The study's own options, one line each."""
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise TlkitError(f"--trials must be a positive integer, got {trials!r}")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0):
        raise TlkitError(f"--timeout must be a positive number of seconds, got {timeout!r}")
    if pruner not in PRUNERS:
        raise TlkitError(f"unknown --pruner {pruner!r} (choose from {', '.join(PRUNERS)})")
    if not 0 < holdout < 1:
        raise TlkitError(f"--holdout must be between 0 and 1 (exclusive), got {holdout!r}")


def check_storage(url: str) -> None:
    """A one-line TlkitError for a storage URL Optuna could not open (nothing is connected)."""
    if url.startswith("journal:"):
        path = Path(url[len("journal:") :]).expanduser()
        if not url[len("journal:") :] or not path.parent.is_dir():
            raise TlkitError(f"--storage {url}: journal:PATH needs a file in an existing folder")
        return
    # lazy: SQLAlchemy (Optuna's dependency) parses URLs; it loads only to tune
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        make_url(url)
    except ArgumentError:
        raise TlkitError(
            f"--storage {url!r} is not a storage URL (sqlite:///FILE, postgresql://..., mysql://... or journal:PATH)"
        ) from None


def make_storage(url: str) -> Any:
    """The Optuna storage of ``url``: a journal file, or an RDB storage with heartbeats (so a killed
    process's running trial is marked failed after :data:`GRACE_S` seconds)."""
    import optuna  # lazy: Optuna loads only to tune

    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend  # lazy: Optuna loads only to tune

        return optuna.storages.JournalStorage(JournalFileBackend(str(Path(url[len("journal:") :]).expanduser())))
    from sqlalchemy.exc import IntegrityError, OperationalError  # lazy: Optuna loads only to tune

    # SQLite: wait for a writer of another process rather than fail with "database is locked".
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite:") else None
    for attempt in range(STORAGE_TRIES):
        try:
            with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna 4-5; --resume needs them
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    url, engine_kwargs=engine, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S
                )
        except (OperationalError, IntegrityError) as exc:  # processes starting together race to create the tables
            if attempt == STORAGE_TRIES - 1:
                first = first_line(str(exc), 200)
                raise TlkitError(f"--storage {url}: cannot open it ({first}); check the URL and the server") from None
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


def make_pruner(name: str, epochs: int) -> Any:
    """Median (after one epoch and five trials), Hyperband over 1..``epochs`` epochs, or none."""
    import optuna  # lazy: Optuna loads only to tune

    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(epochs, 1))
    return optuna.pruners.NopPruner()


def _space(search: Sequence[str] | Mapping[str, Any] | None, config: TrainConfig) -> list[Dimension]:
    if not search:
        raise TlkitError("nothing to search: pass --search NAME=LOW..HIGH[:log] or NAME=a,b,c (or a [search] table)")
    if isinstance(search, Mapping):
        return space_from_table(search, config)
    return parse_search(list(search), config)


def _check_choices(space: list[Dimension], config: TrainConfig) -> None:
    """Each listed base, head and size resolved alone, so a base that refuses a size fails now."""
    for dimension in space:
        if dimension.name in ("base", "head", "image_size") and dimension.kind == "categorical":
            for choice in dimension.choices:
                try:
                    config_for(config, {dimension.name: choice})
                except TlkitError as exc:
                    raise TlkitError(f"--search {dimension.text!r}: {choice}: {exc}") from None


def _new_folder(output: Path, name: str) -> Path:
    output.mkdir(parents=True, exist_ok=True)
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{time.strftime('%Y%m%d-%H%M%S')}-{name}")
    for n in range(1, 10_000):
        folder = output / (stem if n == 1 else f"{stem}-{n}")
        try:
            folder.mkdir()
        except FileExistsError:
            continue
        return folder
    raise TlkitError(f"could not find a free study folder name under {output}; pick another --output")


def _record(frozen: Any) -> TrialRecord:
    intermediate = tuple(frozen.intermediate_values[k] for k in sorted(frozen.intermediate_values))
    seconds = frozen.duration.total_seconds() if frozen.duration is not None else 0.0
    return TrialRecord(
        number=frozen.number,
        state=_STATES.get(frozen.state.name, "failed"),  # type: ignore[arg-type]
        value=frozen.value if frozen.state.name == "COMPLETE" else None,
        params=dict(frozen.params),
        epochs=len(intermediate),
        seconds=seconds,
        intermediate=intermediate,
    )


def _records(study: Any) -> list[TrialRecord]:
    return [_record(t) for t in study.get_trials(deepcopy=False) if not t.user_attrs.get("surplus")]


def _best(records: list[TrialRecord]) -> TrialRecord | None:
    complete = [r for r in records if r.state == "complete" and r.value is not None]
    return max(complete, key=lambda r: (r.value, -r.number)) if complete else None


def tune(
    config: TrainConfig | None = None,
    *,
    search: Sequence[str] | Mapping[str, Any] | None = None,
    trials: int = 20,
    timeout: float | None = None,
    study: str | None = None,
    storage: str | None = None,
    resume: str | Path | None = None,
    output: str | Path = DEFAULT_OUTPUT,
    pruner: str = "median",
    holdout: float = DEFAULT_HOLDOUT,
    observer: TrainingObserver | None = None,
    **options: Any,
) -> TuneResult:
    """Search ``search`` over ``config`` (+ ``options``: train's options) for ``trials`` trials; see the module."""
    import optuna  # lazy: Optuna loads only to tune

    observer = observer or TrainingObserver()
    check_tune_options(trials=trials, timeout=timeout, pruner=pruner, holdout=holdout)
    if resume is not None:
        if config is not None or options or search or study:
            raise TlkitError("--resume continues a study with its own configuration and space; drop the other options")
        folder = Path(resume).expanduser().resolve()
        saved = _read_study(folder)
        config = config_from_mapping(saved["config"], source=str(folder / STUDY_JSON))
        space = parse_search(saved["space"], config)
        name, url, holdout = saved["study"], saved["storage"], float(saved.get("holdout", holdout))
        storage = url if saved.get("shared") else None
        tracked_before = dict(saved.get("tracking") or {})  # the trackers' parent runs, continued
    else:
        config = resolve_config(config, **options)
        if config.multi_label:
            raise TlkitError("tlkit tune does not tune multi-label data yet (--multi-label); tune single-label data")
        space = _space(search, config)
        _check_choices(space, config)
        target = Path(output).expanduser().resolve()
        if target.is_relative_to(Path(config.data).resolve()):
            raise TlkitError(f"--output {output} is inside the data folder {config.data}; tlkit never writes there")
        check_output(target)
        if storage is not None:
            check_storage(storage)
        name = study or f"{config.base}-{config.head}"
        tracked_before = {}
        folder = _new_folder(target, name)
        url = storage or f"sqlite:///{folder / STUDY_DB}"
        write_json(
            folder / STUDY_JSON,
            {
                "study": name,
                "storage": url,
                "shared": storage is not None,
                "config": config.to_dict(),
                "space": [d.text for d in space],
                "holdout": holdout,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            },
        )
    # The trackers of --track (docs/tracking.md): the study is a parent run, each trial a nested one.
    with tracked(config, observer, doing="the study") as tracks:
        observer = tracks.observer
        start_study(
            tracks,
            folder,
            config,
            [d.text for d in space],
            resumed=resume is not None,
            saved=tracked_before,
            save=lambda states: write_json(folder / STUDY_JSON, {**_read_study(folder), "tracking": states}),
        )
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        started = time.perf_counter()
        opened = make_storage(url)
        existing = 0
        try:
            existing = len(optuna.load_study(study_name=name, storage=opened).trials)
        except KeyError:
            pass
        if resume is not None and storage is None:  # the folder's own storage: its earlier process is gone
            _fail_running(opened, name)
        # Seeded from --seed; a resumed or shared study draws on from where the storage is, not anew.
        seed = config.seed + existing + (os.getpid() if storage is not None else 0)
        the_study = optuna.create_study(
            study_name=name,
            storage=opened,
            load_if_exists=True,
            direction="maximize",
            sampler=optuna.samplers.TPESampler(seed=seed % 2**32),
            pruner=make_pruner(pruner, config.epochs),
        )
        if existing == 0:
            _try_every_base_first(the_study, space)
        result = TuneResult(study_name=name, storage=url, config=config, space=[d.text for d in space], folder=folder)
        result.objective = f"accuracy on a {holdout:.0%} hold-out of train (stratified, seed {config.seed}), best epoch"
        cache: dict[tuple[Any, ...], StudyFeatures] = {}

        def features_of(trial_config: TrainConfig) -> StudyFeatures:
            key = feature_key(trial_config)
            if key not in cache:
                observer.message(f"Features: {trial_config.base} at {trial_config.image_size} px, once for the study")
                cache[key] = compute_features(trial_config, observer)
                result.features[f"{trial_config.base}-{trial_config.image_size}"] = cache[key].summary
            return cache[key]

        def objective(trial: Any) -> float:
            if _surplus(the_study, trial.number, trials):
                trial.set_user_attr("surplus", True)
                the_study.stop()
                raise _Surplus
            params = sample(trial, space, config.head)
            trial_config = config_for(config, params)

            def report(value: float, epoch: int) -> None:
                trial.report(value, epoch)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"pruned after epoch {epoch}")

            return max(run_trial(trial_config, features_of(trial_config), holdout=holdout, report=report))

        def finished(done_study: Any, frozen: Any) -> None:
            if frozen.user_attrs.get("surplus"):
                return
            observer.trial_finished(_record(frozen), _best(_records(done_study)))

        limit = optuna.study.MaxTrialsCallback(
            trials, states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        )
        interrupted = False
        with sigterm_stops_training():  # SIGTERM is a KeyboardInterrupt: the running trial fails, the rest stays
            try:
                if _finished_count(the_study) < trials:
                    the_study.optimize(
                        objective,
                        n_trials=trials,
                        timeout=timeout,
                        catch=(_Surplus, TlkitError),
                        callbacks=[limit, finished],
                        gc_after_trial=False,
                    )
            except KeyboardInterrupt:
                interrupted = True
                result.notes.append("interrupted: the finished trials are in the storage; resume with --resume")
        result.timings["trials"] = round(time.perf_counter() - started, 3)
        result.trials = _records(the_study)
        result.best = _best(result.trials)
        if result.best is not None and not interrupted:
            result.best_config = config_for(config, result.best.params)
            with sigterm_stops_training():
                scored = time.perf_counter()
                result.best_val_accuracy = score_on_val(result.best_config, features_of(result.best_config))
                result.default_val_accuracy = score_on_val(config, features_of(config))
                result.timings["val"] = round(time.perf_counter() - scored, 3)
        elif result.best is not None:
            result.best_config = config_for(config, result.best.params)
        result.timings["total"] = round(time.perf_counter() - started, 3)
        _write_outputs(result, the_study, observer)
        finish_study(tracks, result, interrupted)
    return result


def _finished_count(study: Any) -> int:
    return sum(1 for t in study.get_trials(deepcopy=False) if t.state.name in ("COMPLETE", "PRUNED"))


def _surplus(study: Any, number: int, trials: int) -> bool:
    """True when ``trials`` trials numbered below ``number`` are finished or running elsewhere."""
    ahead = [
        t
        for t in study.get_trials(deepcopy=False)
        if t.number < number and t.state.name in ("COMPLETE", "PRUNED", "RUNNING") and not t.user_attrs.get("surplus")
    ]
    return len(ahead) >= trials


def _fail_running(storage: Any, name: str) -> None:
    """Mark the trials a killed process left running as failed (resuming a study's own storage)."""
    from optuna.trial import TrialState  # lazy: Optuna loads only to tune

    try:
        study_id = storage.get_study_id_from_name(name)
    except KeyError:
        return
    for frozen in storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, frozen.number)
        storage.set_trial_state_values(trial_id, state=TrialState.FAIL)


def _read_study(folder: Path) -> dict[str, Any]:
    path = folder / STUDY_JSON
    if not path.is_file():
        raise TlkitError(f"--resume {folder}: no {STUDY_JSON} there; pass a folder made by tlkit tune")
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise TlkitError(f"--resume {folder}: {STUDY_JSON} cannot be read ({exc})") from None
    if not isinstance(saved, dict) or not {"study", "storage", "config", "space"} <= set(saved):
        raise TlkitError(f"--resume {folder}: {STUDY_JSON} is not a study's; pass a folder made by tlkit tune")
    return saved


def _try_every_base_first(study: Any, space: Sequence[Dimension]) -> None:
    """Queue one trial per searched base (and image size) ahead of the sampler: a base search then
    tries, and computes the features of, every base it names, instead of leaving one undrawn in a
    short study.  The other values of these trials are sampled as usual; ``skip_if_exists`` keeps
    processes that start a shared study together from queueing them twice."""
    for dimension in space:
        if dimension.name in ("base", "image_size") and dimension.choices:
            for choice in dimension.choices:
                study.enqueue_trial({dimension.name: choice}, skip_if_exists=True)


def _write_outputs(result: TuneResult, study: Any, observer: TrainingObserver) -> None:
    """The study folder's files (trials.csv, best.toml, plots, report): :mod:`tlkit.tuning.outputs`."""
    # lazy: the outputs load matplotlib, which the study itself never needs
    from tlkit.tuning.outputs import write_outputs

    write_outputs(result, study)


__all__ = ["DEFAULT_OUTPUT", "PRUNERS", "STUDY_DB", "STUDY_JSON", "check_storage", "check_tune_options", "tune"]
