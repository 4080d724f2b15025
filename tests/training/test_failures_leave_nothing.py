"""A fresh run that fails anywhere before its first checkpoint leaves no run directory; one that
fails after it says ``failed`` and why, and resumes; inputs that can be checked are refused
before the model is built or anything is decoded or written."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest

import tlkit
from tests.support import FAST
from tlkit.errors import TlkitError
from tlkit.observer import TrainingObserver
from tlkit.training import finish, run, stages


class Seen(TrainingObserver):
    def __init__(self) -> None:
        self.messages: list[str] = []
        self.epochs = 0
        self.tasks: list[str] = []

    def message(self, text, level="info"):
        self.messages.append(text)

    def task_started(self, task, total):
        self.tasks.append(task)

    def epoch_ended(self, stage, epoch, last_epoch, logs):
        self.epochs += 1


def _disk_full(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def _interrupt(*_args, **_kwargs):
    raise KeyboardInterrupt


def _boom(*_args, **_kwargs):
    raise RuntimeError("an injected failure")


def _interrupting_callbacks(_runner):
    """Keras callbacks that stop the first training batch as Ctrl-C would."""
    import keras

    class CtrlC(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            raise KeyboardInterrupt

    return [CtrlC()]


def _not_an_image(data: Path, tmp_path: Path, monkeypatch) -> dict:
    (data / "train" / "cat" / "notes.png").write_text("not a picture")
    return {}


def _truncated(data: Path, tmp_path: Path, monkeypatch) -> dict:
    whole = next((data / "train" / "dog").glob("*.png")).read_bytes()
    (data / "train" / "dog" / "cut.png").write_bytes(whole[: len(whole) // 2])  # header fine, pixels cut
    return {}


def _unknown_class_weight(data: Path, tmp_path: Path, monkeypatch) -> dict:
    path = tmp_path / "weights.json"
    path.write_text(json.dumps({"cat": 2.0, "zebra": 1.0}))
    return {"class_weight": str(path)}


def _cache_is_a_file(data: Path, tmp_path: Path, monkeypatch) -> dict:
    (tmp_path / "cache-file").write_text("")
    monkeypatch.setenv("TLKIT_CACHE_DIR", str(tmp_path / "cache-file"))
    return {}


def _inject(target, name: str, failure):
    def setup(data: Path, tmp_path: Path, monkeypatch) -> dict:
        monkeypatch.setattr(target, name, failure)
        return {}

    return setup


# (id, setup, options, what the error says, the last thing allowed to have happened)
CASES = [
    ("unfreeze layer", None, {"fine_tune_epochs": 1, "unfreeze": "from:nope"}, "has no layer 'nope'", "model"),
    ("unfreeze depth", None, {"fine_tune_epochs": 1, "unfreeze": "100000"}, "beyond the depth", "model"),
    ("class weight names", _unknown_class_weight, {}, "zebra", "scan"),
    ("unreadable header", _not_an_image, {}, "notes.png", "scan"),
    ("cache is a file", _cache_is_a_file, {}, "is a file, not a folder", "model"),
    ("truncated pixels", _truncated, {}, "cut.png", "decode"),
    ("prepare: disk full", _inject(run.prep, "initial_state", _disk_full), {}, "No space left", "decode"),
    ("features: disk full", _inject(run, "run_features", _disk_full), {}, "No space left", "features"),
    ("features: signal", _inject(run, "run_features", _interrupt), {}, "nothing was saved", "features"),
    ("fit: a bug", _inject(stages.StageRunner, "run_stages", _boom), {}, "an injected failure", "features"),
    (
        "fit: signal",
        _inject(stages.StageRunner, "_keras_callbacks", _interrupting_callbacks),
        {},
        "nothing was saved",
        "features",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_a_failure_before_the_first_checkpoint_leaves_no_run_directory(case, tiny_data, tmp_path, monkeypatch):
    _, setup, options, says, reached = case
    monkeypatch.setenv("TLKIT_CACHE_DIR", str(tmp_path / "cache"))  # a fresh cache: the feature pass runs
    extra = setup(tiny_data, tmp_path, monkeypatch) if setup else {}
    seen, output = Seen(), tmp_path / "runs"
    with pytest.raises((TlkitError, OSError, RuntimeError)) as failed:
        tlkit.train(data=str(tiny_data), **FAST, epochs=1, output=str(output), observer=seen, **options, **extra)
    assert says in str(failed.value) and "\n" not in str(failed.value).split(":", 1)[0]
    assert not output.exists() or not any(output.iterdir()), "a failed run left a run directory behind"
    assert seen.epochs == 0
    built = any(m.startswith("Model:") for m in seen.messages)
    decoded = any(t.startswith("decoding") for t in seen.tasks)
    if reached == "scan":
        assert not built and not decoded, "refused only after building the model"
    if reached == "model":
        assert built and not decoded, "refused only after decoding the images"


def test_a_run_that_fails_while_saving_says_failed_and_resumes(tiny_data, tmp_path, monkeypatch):
    monkeypatch.setattr(finish, "_portable", _disk_full)
    output = tmp_path / "runs"
    with pytest.raises(OSError, match="No space left"):
        tlkit.train(data=str(tiny_data), **FAST, epochs=1, output=str(output), verbose=False)
    (run_dir,) = output.iterdir()
    state = json.loads(tlkit.RunDir(run_dir).state_path.read_text())
    assert state["status"] == "failed" and "No space left" in state["error"] and state["epoch"] == 1
    assert not tlkit.RunDir(run_dir).model_path.exists()
    monkeypatch.undo()
    resumed = tlkit.train(resume=run_dir, verbose=False)
    assert resumed.run_dir == run_dir and resumed.model_path.is_file()
    assert json.loads(tlkit.RunDir(run_dir).state_path.read_text())["status"] == "done"


def test_a_report_that_fails_still_finishes_the_run(tiny_data, tmp_path, monkeypatch):
    monkeypatch.setattr(finish, "write_report", _boom)
    seen = Seen()
    result = tlkit.train(data=str(tiny_data), **FAST, epochs=1, output=str(tmp_path / "runs"), observer=seen)
    assert result.report is None and result.model_path.is_file()
    assert any("could not write the report" in m and "tlkit report" in m for m in seen.messages)
