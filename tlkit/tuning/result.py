"""What a study found: plain records, shared by the study runner, its outputs and the CLI."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tlkit.config.options import TrainConfig

TrialState = Literal["complete", "pruned", "failed", "running"]


@dataclass(frozen=True)
class TrialRecord:
    """One trial: its number, how it ended, its hold-out score and the values it tried.

    ``params`` uses the search's own names (``lr``, ``head``, ``head.dropout``, ``base``...);
    ``value`` is the objective (hold-out accuracy, higher is better; None unless complete);
    ``epochs`` how many epochs it trained before finishing or being pruned.
    """

    number: int
    state: TrialState
    value: float | None
    params: dict[str, Any]
    epochs: int = 0
    seconds: float = 0.0
    intermediate: tuple[float, ...] = ()  # the objective after each epoch (what the pruner saw)


@dataclass
class TuneResult:
    """Everything :func:`tlkit.tune` produced, and where it wrote it."""

    study_name: str
    storage: str  # the Optuna storage URL (a SQLite file in the study folder by default)
    config: TrainConfig  # the base configuration the search varies
    space: list[str]  # the search space, one ``name=spec`` string per dimension, as given
    trials: list[TrialRecord] = field(default_factory=list)
    best: TrialRecord | None = None
    best_config: TrainConfig | None = None  # a complete `tlkit train --config` configuration
    objective: str = ""  # in words, e.g. "accuracy on a 20 % hold-out of train (stratified, seed 0)"
    best_val_accuracy: float | None = None  # the best configuration scored once on val, after tuning
    default_val_accuracy: float | None = None  # the untuned configuration scored the same way
    features: dict[str, Any] = field(default_factory=dict)  # per base: cache hit or computed, seconds
    folder: Path | None = None  # tune/<timestamp>-<study>/
    files: dict[str, Path] = field(default_factory=dict)  # trials_csv, best_toml, report, plots...
    train_command: str = ""  # tlkit train --config <folder>/best.toml
    timings: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    best_run: Path | None = None  # the run directory of the best configuration (train_best=True)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (what ``tlkit tune --json`` prints)."""
        return {
            "study": self.study_name,
            "storage": self.storage,
            "folder": str(self.folder) if self.folder else None,
            "objective": self.objective,
            "space": list(self.space),
            "trials": [
                {
                    "number": t.number,
                    "state": t.state,
                    "value": t.value,
                    "params": t.params,
                    "epochs": t.epochs,
                    "seconds": round(t.seconds, 3),
                }
                for t in self.trials
            ],
            "best": None
            if self.best is None
            else {"number": self.best.number, "value": self.best.value, "params": self.best.params},
            "best_val_accuracy": self.best_val_accuracy,
            "default_val_accuracy": self.default_val_accuracy,
            "train_command": self.train_command,
            "files": {k: str(v) for k, v in self.files.items()},
            "best_run": str(self.best_run) if self.best_run else None,
        }


__all__ = ["TrialRecord", "TrialState", "TuneResult"]
