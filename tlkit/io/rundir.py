"""The run directory: the one place that knows its layout, and atomic file writes.

A run directory is what ``tlkit train`` leaves behind::

    runs/<YYYYmmdd-HHMMSS>-<base>-<head>[-N]/
      config.toml   classes.json   model.keras   history.csv   metrics.json
      report.html   plots/   evaluation/   checkpoints/   logs/   export/
      tracking.json (runs trained with --track)

Every module that reads or writes one goes through :class:`RunDir` — no other
module spells these file names.  A run directory is never reused: its name
carries a timestamp, and a suffix is added when that name exists.  Every file
is written to a temporary name in the same folder and renamed into place, so
a crash never leaves a half file where a later command would trust it.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tlkit.errors import TlkitError
from tlkit.io.files import read_json_object, write_json, write_text
from tlkit.io.toml import read_toml

_MADE_BY_TRAIN = "pass a run directory made by `tlkit train`"


@dataclass(frozen=True)
class RunDir:
    """One run directory: the path of every file in it, typed readers and atomic writers.

    Create one with :meth:`create` (a new run), :meth:`open` (an existing run,
    checked) or :meth:`open_for_resume` (a run that can continue).
    """

    path: Path

    # File and folder names: the layout, written down once.
    CONFIG = "config.toml"
    CLASSES = "classes.json"
    MODEL = "model.keras"
    HISTORY = "history.csv"
    METRICS = "metrics.json"
    REPORT = "report.html"
    #: ``--multi-label`` runs: each label's decision threshold (``tlkit.evaluation.multilabel``).
    THRESHOLDS = "thresholds.json"
    PLOTS = "plots"
    EVALUATION = "evaluation"
    CHECKPOINTS = "checkpoints"
    LOGS = "logs"
    #: Runs trained with ``--track``: each tracker's state for this run (e.g. its MLflow run id), so that
    #: ``--resume`` and ``tlkit evaluate`` report to the same tracked run (:mod:`tlkit.tracking`).
    TRACKING = "tracking.json"
    #: ``tlkit export`` writes one folder per export in here (``tlkit.exporting.exporter`` owns its layout).
    EXPORT = "export"
    #: Inside ``evaluation/``: the report's Grad-CAM overlays of the most confident mistakes, kept so
    #: that a later ``tlkit report`` shows them without loading the model (``tlkit.evaluation.report`` owns it).
    EXPLAINED_MISTAKES = "explained_mistakes.json"
    #: Inside ``evaluation/`` (or wherever ``tlkit evaluate --output`` points).
    EVALUATION_FILES = {
        "metrics": "metrics.json",
        "confusion_matrix": "confusion_matrix.png",
        "mistakes": "mistakes.png",
    }
    #: Inside ``checkpoints/``: the state that commits an epoch, and the arrays of the
    #: generations it names (``kind`` is last, optimizer or best; see :mod:`tlkit.training.checkpoints`).
    STATE = "state.json"
    CHECKPOINT_FILE = "{kind}-{generation}.arrays"
    #: The arrays of run directories from before generations (still resumable).
    LAST_WEIGHTS = "last.arrays"
    BEST_WEIGHTS = "best.arrays"
    OPTIMIZER = "optimizer.arrays"

    # -- opening -------------------------------------------------------------
    @classmethod
    def create(cls, output: str | Path, base: str, head: str, *, now: float | None = None) -> RunDir:
        """Create a new, empty ``output/<YYYYmmdd-HHMMSS>-<base>-<head>[-N]`` folder."""
        output = Path(output)
        output.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{stamp}-{base}-{head}")
        for n in range(1, 10_000):
            path = output / (stem if n == 1 else f"{stem}-{n}")
            try:
                path.mkdir()  # atomic: fails if another run took the name
            except FileExistsError:
                continue
            return cls(path)
        raise TlkitError(
            f"could not find a free run directory name under {output}; clean it up or pick another --output"
        )

    @staticmethod
    def is_run_dir(path: str | Path) -> bool:
        """True when ``path`` is a folder holding a run's ``config.toml``."""
        return (Path(path) / RunDir.CONFIG).is_file()

    @classmethod
    def open(cls, path: str | Path) -> RunDir:
        """An existing run directory, or a one-line TlkitError saying why ``path`` is not one."""
        path = Path(path).expanduser()
        if not path.exists():
            raise TlkitError(f"{path} does not exist; {_MADE_BY_TRAIN}")
        if not path.is_dir():
            raise TlkitError(f"{path} is not a folder; {_MADE_BY_TRAIN}")
        if not cls.is_run_dir(path):
            raise TlkitError(
                f"{path} is not a tlkit run directory (no {cls.CONFIG}); pass the folder `tlkit train` "
                f"printed, e.g. runs/<timestamp>-<base>-<head>"
            )
        return cls(path)

    @classmethod
    def open_for_resume(cls, path: str | Path) -> tuple[RunDir, dict[str, Any] | None]:
        """A run that can continue, and its checkpoint state (None before the first epoch)."""
        path = Path(path).expanduser()
        if not path.is_dir():
            raise TlkitError(f"--resume {path}: no such folder")
        run = cls(path)
        if not run.config_path.is_file() or not run.classes_path.is_file():
            raise TlkitError(f"--resume {path}: not a tlkit run directory (it has no {cls.CONFIG}/{cls.CLASSES})")
        state = run.read_state()
        if state is not None and state.get("status") == "done":
            raise TlkitError(
                f"--resume {path}: that run already finished; start a new run with "
                f"tlkit train --config {run.config_path}"
            )
        return run, state

    # -- paths ---------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.path.name

    @property
    def config_path(self) -> Path:
        return self.path / self.CONFIG

    @property
    def classes_path(self) -> Path:
        return self.path / self.CLASSES

    @property
    def model_path(self) -> Path:
        return self.path / self.MODEL

    @property
    def history_path(self) -> Path:
        return self.path / self.HISTORY

    @property
    def metrics_path(self) -> Path:
        return self.path / self.METRICS

    @property
    def report_path(self) -> Path:
        return self.path / self.REPORT

    @property
    def thresholds_path(self) -> Path:
        return self.path / self.THRESHOLDS

    @property
    def tracking_path(self) -> Path:
        return self.path / self.TRACKING

    @property
    def plots_dir(self) -> Path:
        return self.path / self.PLOTS

    @property
    def evaluation_dir(self) -> Path:
        return self.path / self.EVALUATION

    @property
    def evaluation_metrics_path(self) -> Path:
        return self.evaluation_dir / self.EVALUATION_FILES["metrics"]

    @property
    def explained_mistakes_path(self) -> Path:
        return self.evaluation_dir / self.EXPLAINED_MISTAKES

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / self.CHECKPOINTS

    @property
    def logs_dir(self) -> Path:
        return self.path / self.LOGS

    @property
    def export_dir(self) -> Path:
        """Where ``tlkit export`` puts its folders by default (``<run>/export/<format>[-<quantize>]``)."""
        return self.path / self.EXPORT

    @property
    def state_path(self) -> Path:
        return self.checkpoints_dir / self.STATE

    @property
    def last_weights_path(self) -> Path:
        return self.checkpoints_dir / self.LAST_WEIGHTS

    @property
    def best_weights_path(self) -> Path:
        return self.checkpoints_dir / self.BEST_WEIGHTS

    @property
    def optimizer_path(self) -> Path:
        return self.checkpoints_dir / self.OPTIMIZER

    def checkpoint_file(self, kind: str, generation: str) -> Path:
        """``checkpoints/<kind>-<generation>.arrays`` (kind: last, optimizer or best)."""
        return self.checkpoints_dir / self.CHECKPOINT_FILE.format(kind=kind, generation=generation)

    def has_model(self) -> bool:
        """True once training finished and wrote ``model.keras``."""
        return self.model_path.is_file()

    def require_model(self) -> Path:
        """``model.keras``, or a TlkitError saying the run did not finish and what to do."""
        if not self.has_model():
            raise TlkitError(
                f"run {self.path} has no {self.MODEL} (did its training finish?); "
                f"resume or rerun it with `tlkit train --config {self.config_path}`"
            )
        return self.model_path

    # -- readers -------------------------------------------------------------
    def read_config(self) -> dict[str, Any]:
        """``config.toml`` as a plain dict (the ``[tlkit]`` provenance table included)."""
        return read_toml(self.config_path)

    def read_classes(self) -> list[str]:
        """The class names (index = the model's output index), checked."""
        return read_classes_file(self.classes_path)

    def read_history(self) -> tuple[dict[str, list[float]], list[str], list[int]]:
        """``(history, stages, epochs)`` from ``history.csv`` (all empty when there is none)."""
        if not self.history_path.is_file():
            return {}, [], []
        return read_history_csv(self.history_path)

    def read_metrics(self) -> dict[str, Any]:
        """The training ``metrics.json`` ({} before training finished)."""
        return read_json_object(self.metrics_path) or {}

    def read_evaluation(self) -> dict[str, Any] | None:
        """``evaluation/metrics.json`` (None when the run was not evaluated)."""
        return read_json_object(self.evaluation_metrics_path)

    def read_thresholds(self) -> dict[str, float] | None:
        """A multi-label run's ``{label: threshold}`` (None when the run has none), checked."""
        value = read_json_object(self.thresholds_path)
        if value is None:
            return None
        thresholds = value.get("thresholds")
        if not isinstance(thresholds, dict) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1 for v in thresholds.values()
        ):
            raise TlkitError(f'{self.thresholds_path} must hold {{"thresholds": {{label: number in 0..1}}}}')
        return {str(k): float(v) for k, v in thresholds.items()}

    def read_tracking(self) -> dict[str, dict[str, Any]]:
        """``{tracker: state}`` of a run trained with ``--track`` ({} when it was not tracked)."""
        value = read_json_object(self.tracking_path) or {}
        return {str(name): dict(state) for name, state in value.items() if isinstance(state, dict)}

    def read_state(self) -> dict[str, Any] | None:
        """The checkpoint state (None before the first epoch)."""
        if not self.state_path.is_file():
            return None
        try:
            return json.loads(self.state_path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise TlkitError(f"{self.state_path} is damaged ({exc}); the run cannot be resumed") from None

    # -- writers (all atomic) ------------------------------------------------
    def write_config(self, toml: str) -> None:
        """The fully resolved configuration as TOML text (``tlkit train --config`` reproduces the run)."""
        write_text(self.config_path, toml)

    def write_classes(self, classes: list[str]) -> None:
        write_json(self.classes_path, list(classes))

    def write_history(self, rows: list[dict[str, Any]]) -> None:
        write_text(self.history_path, rows_to_csv(rows))

    def write_metrics(self, metrics: Mapping[str, Any]) -> None:
        write_json(self.metrics_path, dict(metrics))

    def write_state(self, state: Mapping[str, Any]) -> None:
        """The checkpoint state; written last after an epoch, it commits that epoch."""
        write_json(self.state_path, dict(state))

    def write_tracking(self, states: Mapping[str, Mapping[str, Any]]) -> None:
        """Each tracker's state for this run (what its ``run_started`` returned), by tracker name."""
        write_json(self.tracking_path, {name: dict(state) for name, state in states.items()})

    def write_thresholds(self, thresholds: Mapping[str, float], source: str) -> None:
        """A multi-label run's thresholds, ``{label: threshold}``, and how they were chosen."""
        write_json(self.thresholds_path, {"source": source, "thresholds": {k: float(v) for k, v in thresholds.items()}})

    def write_report(self, html: str) -> Path:
        write_text(self.report_path, html)
        return self.report_path

    def __str__(self) -> str:
        return str(self.path)

    def __fspath__(self) -> str:
        return str(self.path)


def read_classes_file(path: str | Path) -> list[str]:
    """The class names of a ``classes.json`` (a JSON list of strings), checked."""
    path = Path(path)
    try:
        classes = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise TlkitError(f"cannot read the class names in {path}: {exc}") from exc
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        raise TlkitError(f'{path} must hold a JSON list of class names, e.g. ["cat", "dog"]')
    return classes


# -- history.csv: one row per epoch (the columns are the union of the rows' keys)


def rows_to_csv(rows: list[dict[str, Any]]) -> str:
    """CSV text with a header from the union of the rows' keys (first-seen order)."""
    header: list[str] = []
    for row in rows:
        header += [key for key in row if key not in header]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=header, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def read_history_csv(path: str | Path) -> tuple[dict[str, list[float]], list[str], list[int]]:
    """``(history, stages, epochs)`` from a ``history.csv`` (missing values become NaN)."""
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    history: dict[str, list[float]] = {}
    stages: list[str] = []
    epochs: list[int] = []
    columns = [c for c in (rows[0].keys() if rows else []) if c not in ("epoch", "stage")]
    for i, row in enumerate(rows, start=1):
        try:
            epochs.append(int(float(row.get("epoch") or i)))
        except ValueError:
            epochs.append(i)
        stages.append(row.get("stage") or "head")
        for column in columns:
            try:
                value = float(row.get(column) or "nan")
            except ValueError:
                value = math.nan
            history.setdefault(column, []).append(value)
    # A non-numeric column (a note, a path) is not a metric.
    history = {k: v for k, v in history.items() if not all(math.isnan(x) for x in v)}
    return history, stages, epochs


__all__ = ["RunDir", "read_classes_file"]
