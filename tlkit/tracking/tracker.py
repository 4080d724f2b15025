"""The tracker interface: what an experiment tracker (MLflow, or a plugin's own) is told about a run.

A tracker is a :class:`~tlkit.observer.TrainingObserver` with run-level events.  tlkit calls, in
this order, for ``tlkit train --track NAME``::

    run_started(run)                  the run directory exists; its resolved config, tags, saved state
    stage_started / epoch_ended ...   every TrainingObserver event (epoch_ended: one per global epoch)
    model_saved(path, example)        model.keras is written; example: a few raw validation images
    artifacts_written(paths, folder)  config.toml, classes.json, history.csv, report.html, plots/...,
                                      then metrics.json (with every tracker's status in it)
    run_ended(status, metrics)        "finished", or "killed" (Ctrl-C, SIGTERM) / "failed" (an error)

``tlkit tune --track NAME`` calls ``run_started`` (``run.kind == "study"``), ``trial_finished``
once per trial, ``artifacts_written`` and ``run_ended``; ``tlkit evaluate`` of a tracked run calls
:meth:`Tracker.evaluation_finished` alone, in a new process.  Every method does nothing by
default; tlkit catches whatever a tracker raises (:mod:`tlkit.tracking.session`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tlkit.observer import TrainingObserver

FINISHED, KILLED, FAILED = "finished", "killed", "failed"
#: How a run ended, as :meth:`Tracker.run_ended` is told.
RunStatus = Literal["finished", "killed", "failed"]


def _ignore(text: str) -> None:
    pass


@dataclass(frozen=True)
class TrackedRun:
    """What a tracker is told about a run (or a study) when it starts, or when it is evaluated.

    - ``kind``: ``"train"`` (a run directory) or ``"study"`` (a ``tlkit tune`` study folder).
    - ``name``, ``path``: the run directory's (or study folder's) name and absolute path.
    - ``config``: the resolved configuration (``TrainConfig.to_dict()``: what ``config.toml`` holds);
      a study's also holds ``search`` (the space, one ``name=spec`` string per dimension).
    - ``tags``: ``tlkit.kind``, ``tlkit.version``, ``tlkit.base``, ``tlkit.head``, ``tlkit.run_dir``
      and, for a run, ``tlkit.data_fingerprint`` (the training and validation images' content).
    - ``resumed``: True when ``--resume`` continues the run.
    - ``state``: what this tracker's ``run_started`` returned when the run started before (``{}``
      for a new run): a resumed run or ``tlkit evaluate`` finds its tracked run with it.
    - ``say(text)``: shows one info line to the user (e.g. where the run is tracked).
    """

    kind: Literal["train", "study"]
    name: str
    path: Path
    config: dict[str, Any]
    tags: dict[str, str] = field(default_factory=dict)
    resumed: bool = False
    state: dict[str, Any] = field(default_factory=dict)
    say: Callable[[str], None] = _ignore


class Tracker(TrainingObserver):
    """An experiment tracker: subclass it and override what you record (every method is a no-op).

    ``build`` of a :class:`tlkit.TrackerSpec` returns one per run; tlkit sets :attr:`name` to the
    registered name.  Besides the methods below, every :class:`~tlkit.TrainingObserver` event
    reaches the tracker once the run has started — ``epoch_ended(stage, epoch, last_epoch, logs)``
    is the one to record metrics from (``epoch`` is global across the head and fine-tuning stages),
    and ``trial_finished(trial, best)`` reports each trial of a study.

    A tracker must never stop training: tlkit catches any exception it raises, shows one warning
    naming the tracker and the reason, calls it no more for the rest of the run and writes its
    status into ``metrics.json`` (``trackers``).  Make slow remote calls fail fast (short timeouts,
    few retries) so that an unreachable server costs seconds, not minutes.
    """

    #: The registered name (``--track NAME``), set by tlkit.
    name: str = ""

    def run_started(self, run: TrackedRun) -> Mapping[str, Any] | None:
        """The run (or study) started, or resumed (``run.resumed``, with ``run.state``).

        Return a small JSON-serialisable mapping (e.g. ``{"run_id": ..., "uri": ...}``): tlkit keeps
        it in the run directory (``tracking.json``) and hands it back as ``run.state`` when the run
        is resumed or evaluated, and shows it in ``metrics.json``.
        """
        return None

    def model_saved(self, path: Path, example: Any) -> None:
        """``model.keras`` is written at ``path`` (the best epoch's model; it loads with plain
        ``keras.saving.load_model`` and takes raw 0–255 RGB pixels).  ``example`` is a float32
        ``(n, size, size, 3)`` batch of validation images as the model takes them (None when no
        image could be read)."""

    def artifacts_written(self, paths: Sequence[Path], folder: str = "") -> None:
        """Files of the run directory are complete; ``folder`` is where they sit in it (``""``,
        ``"plots"``, ``"evaluation"``)."""

    def run_ended(self, status: RunStatus, metrics: Mapping[str, Any]) -> None:
        """The run ended: ``"finished"`` (``metrics``: what ``metrics.json`` holds; a study's:
        ``best_value``, ``best_val_accuracy``, ``default_val_accuracy``, ``trials``), ``"killed"``
        (Ctrl-C or SIGTERM; ``--resume`` may continue it) or ``"failed"`` (an error; ``metrics``
        is empty then)."""

    def evaluation_finished(self, run: TrackedRun, metrics: Mapping[str, float], files: Sequence[Path]) -> None:
        """``tlkit evaluate`` measured a run this tracker tracked (``run.state`` is what
        :meth:`run_started` returned): its headline ``metrics`` (``accuracy``, ``log_loss``,
        ``macro_avg_f1``...) and the files it wrote."""


def flat_params(values: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """``values`` as flat text parameters: nested mappings become dotted keys (``head_params.units``),
    lists and tuples comma-separated text, booleans ``true``/``false``, None ``""``."""
    flat: dict[str, str] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flat_params(value, f"{name}."))
        elif isinstance(value, (list, tuple)):
            flat[name] = ",".join(_text(v) for v in value)
        else:
            flat[name] = _text(value)
    return flat


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


__all__ = ["FAILED", "FINISHED", "KILLED", "RunStatus", "TrackedRun", "Tracker", "flat_params"]
