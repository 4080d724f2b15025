"""Tracking a training run, a study and an evaluation: what each tells its trackers, and when.

- :func:`tracked` wraps a run (or a study): it opens the trackers of ``config.track`` and, when
  the run stops on the way, ends their runs as ``killed`` (Ctrl-C, SIGTERM) or ``failed``.
- :func:`start_training` / :func:`finish_training`: a run directory's milestones (its tracker
  state kept in ``tracking.json``, so ``--resume`` continues the same tracked run).
- :func:`start_study` / :func:`finish_study`: ``tlkit tune``'s parent run (trials in between).
- :func:`check_evaluation` / :func:`track_evaluation`: ``tlkit evaluate`` of a tracked run.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tlkit.data.decode import BadImageError, load_image
from tlkit.errors import TlkitError, one_line
from tlkit.io.rundir import RunDir
from tlkit.observer import TrainingObserver
from tlkit.tracking.session import TrackingSession
from tlkit.tracking.tracker import FAILED, FINISHED, KILLED, TrackedRun
from tlkit.version import __version__

if TYPE_CHECKING:
    from tlkit.config.options import TrainConfig

#: Validation images in the model's input example (what MLflow stores next to the model).
EXAMPLE_IMAGES = 2


@contextmanager
def tracked(
    config: TrainConfig,
    observer: TrainingObserver,
    *,
    interrupted: tuple[type[BaseException], ...] = (KeyboardInterrupt,),
    doing: str = "training",
) -> Iterator[TrackingSession]:
    """The trackers of ``config.track`` for one run (a session that tracks nothing without ``--track``).

    An exception out of the block ends the tracked runs: ``killed`` for ``interrupted`` (Ctrl-C and
    SIGTERM, and the error a run raises for them), ``failed`` for anything else.
    """
    session = TrackingSession.open(
        config.track, uri=config.track_uri, register_model=config.register_model, observer=observer, doing=doing
    )
    try:
        yield session
    except interrupted:
        session.end(KILLED)
        raise
    except BaseException:
        session.end(FAILED)
        raise


def _tags(kind: str, path: Path, config: Mapping[str, Any]) -> dict[str, str]:
    return {
        "tlkit.kind": kind,
        "tlkit.version": __version__,
        "tlkit.base": str(config.get("base", "")),
        "tlkit.head": str(config.get("head", "")),
        "tlkit.run_dir": str(path),
    }


def data_fingerprint(fingerprints: Mapping[str, str]) -> str:
    """One fingerprint of a run's data (the train and val images' content, and the labels CSV)."""
    text = "\n".join(f"{name}={fingerprints[name]}" for name in sorted(fingerprints))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- a training run


def start_training(
    session: TrackingSession,
    run_dir: RunDir,
    config: TrainConfig,
    fingerprints: Mapping[str, str],
    *,
    resumed: bool,
    chief: bool = True,
) -> None:
    """The run directory exists and the data is known: the trackers' runs start (or resume)."""
    if not chief:  # a multi-worker run's other workers: the chief alone tracks
        session.disable()
    if not session.active:
        return
    path = run_dir.path.resolve()
    values = config.to_dict()
    tags = {**_tags("train", path, values), "tlkit.data_fingerprint": data_fingerprint(fingerprints)}
    run = TrackedRun(kind="train", name=path.name, path=path, config=values, tags=tags, resumed=resumed)
    session.start(run, saved=run_dir.read_tracking(), save=run_dir.write_tracking)


def finish_training(session: TrackingSession, result: Any, example_files: Sequence[Path]) -> Any:
    """After the run's files are written (``result``: its :class:`~tlkit.training.finish.TrainResult`):
    the model, the files, then ``metrics.json`` with every tracker's status, and the end."""
    if not session.requested:
        return result
    run_dir = RunDir(Path(result.run_dir))
    if session.active:
        session.call("model_saved", run_dir.model_path, example_batch(example_files, result.config.image_size))
        top = [run_dir.config_path, run_dir.classes_path, run_dir.history_path, run_dir.thresholds_path]
        if result.report is not None:
            top.append(Path(result.report))
        session.call("artifacts_written", [p for p in top if p.is_file()], "")
        if result.plots:
            session.call("artifacts_written", [Path(p) for p in result.plots], run_dir.plots_dir.name)
        if run_dir.evaluation_dir.is_dir():  # the report's evaluation of the validation images
            evaluation = sorted(p for p in run_dir.evaluation_dir.iterdir() if p.is_file())
            session.call("artifacts_written", evaluation, run_dir.evaluation_dir.name)
    result.metrics["trackers"] = _statuses(session)
    run_dir.write_metrics(result.metrics)  # the metrics.json the trackers get says how they did
    session.call("artifacts_written", [run_dir.metrics_path], "")
    logged = {name: status["status"] for name, status in result.metrics["trackers"].items()}
    session.end(FINISHED, result.metrics)
    if logged != {name: status["status"] for name, status in session.statuses.items()}:
        result.metrics["trackers"] = _statuses(session)  # one failed at the very end: say so here
        run_dir.write_metrics(result.metrics)
    return result


def example_batch(files: Sequence[Path], size: int, count: int = EXAMPLE_IMAGES) -> np.ndarray | None:
    """The first ``count`` readable images of ``files`` as the model takes them (float32 0–255)."""
    images = []
    for path in files:
        try:
            images.append(load_image(path, size))
        except BadImageError:
            continue
        if len(images) == count:
            break
    return np.stack(images).astype(np.float32) if images else None


def _statuses(session: TrackingSession) -> dict[str, dict[str, Any]]:
    return {name: dict(status) for name, status in session.statuses.items()}


# --------------------------------------------------------------------------- a study


def start_study(
    session: TrackingSession,
    folder: Path,
    config: TrainConfig,
    space: Sequence[str],
    *,
    resumed: bool,
    saved: Mapping[str, Mapping[str, Any]] | None,
    save: Callable[[dict[str, dict[str, Any]]], None],
) -> None:
    """The study folder exists: the trackers' parent runs start (trials are reported as they end)."""
    if not session.active:
        return
    path = folder.resolve()
    values = {**config.to_dict(), "search": list(space)}
    tags = _tags("study", path, values)
    run = TrackedRun(kind="study", name=path.name, path=path, config=values, tags=tags, resumed=resumed)
    session.start(run, saved=saved, save=save)


def finish_study(session: TrackingSession, result: Any, interrupted: bool) -> None:
    """The study's files are written (``result``: its :class:`~tlkit.tuning.result.TuneResult`)."""
    if not session.active:
        return
    files = [Path(p) for p in result.files.values() if Path(p).is_file()]
    session.call("artifacts_written", files, "")
    metrics = {
        "best_value": result.best.value if result.best is not None else None,
        "best_val_accuracy": result.best_val_accuracy,
        "default_val_accuracy": result.default_val_accuracy,
        "trials": len(result.trials),
    }
    session.end(KILLED if interrupted else FINISHED, {k: v for k, v in metrics.items() if v is not None})


# --------------------------------------------------------------------------- an evaluation


def check_evaluation(run_dir: str | Path | None, track: bool | None) -> None:
    """``track=True`` (``tlkit evaluate --track``) needs a run that was trained with ``--track``."""
    if track and (run_dir is None or not RunDir(Path(run_dir)).read_tracking()):
        where = f"run {run_dir}" if run_dir else "a model file outside a run directory"
        raise TlkitError(f"--track: {where} was not trained with --track, so there is no tracked run to add to")


def evaluation_metrics(values: Mapping[str, Any]) -> dict[str, float]:
    """An evaluation's headline numbers (``accuracy``, ``log_loss``, ``macro_avg_f1``...) from its
    ``metrics.json``: the top-level numbers and those of its ``*_avg`` tables."""
    found: dict[str, float] = {}
    for key, value in values.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and key not in ("seconds", "top_k"):
            found[key] = float(value)
        elif key.endswith("_avg") and isinstance(value, Mapping):
            found.update({f"{key}_{k}": float(v) for k, v in value.items() if isinstance(v, (int, float))})
    return found


def track_evaluation(
    run_dir: str | Path | None, values: Mapping[str, Any], files: Mapping[str, str], track: bool | None
) -> list[str]:
    """Report an evaluation to the trackers its run was trained with (unless ``track`` is False);
    the notes for the user: where it went, or why a tracker failed (the evaluation stands)."""
    if track is False or run_dir is None:
        return []
    run = RunDir(Path(run_dir))
    saved = run.read_tracking()
    if not saved:
        return []
    notes: list[str] = []
    notes_observer = _Notes(notes)
    config = run.read_config()
    for name, state in saved.items():
        try:
            session = TrackingSession.open(
                [name], uri=str(config.get("track_uri", "")), observer=notes_observer, doing="the evaluation"
            )
        except TlkitError as exc:
            notes.append(f"not reported to tracker {name!r}: {one_line(exc)}")
            continue
        for tracker_name, tracker in session.active.items():
            path = run.path.resolve()
            tracked_run = TrackedRun(
                kind="train",
                name=path.name,
                path=path,
                config=config,
                tags=_tags("train", path, config),
                state=dict(state),
                say=notes.append,
            )
            paths = [Path(p) for p in files.values() if Path(p).is_file()]
            session.call_one(
                tracker_name, tracker, "evaluation_finished", tracked_run, evaluation_metrics(values), paths
            )
    return notes


class _Notes(TrainingObserver):
    """Collects the lines a tracker session shows (an evaluation has no observer: they become notes)."""

    def __init__(self, notes: list[str]) -> None:
        self.notes = notes

    def message(self, text: str, level: str = "info") -> None:
        self.notes.append(text)


__all__ = [
    "EXAMPLE_IMAGES",
    "check_evaluation",
    "data_fingerprint",
    "evaluation_metrics",
    "example_batch",
    "finish_study",
    "finish_training",
    "start_study",
    "start_training",
    "track_evaluation",
    "tracked",
]
