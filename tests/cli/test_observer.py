"""A training run reports through its observer: the library prints nothing unless asked."""

from __future__ import annotations

import pytest

import tlkit
from tlkit.observer import TrainingObserver
from tlkit.testing import make_image_folder


class Recorder(TrainingObserver):
    def __init__(self) -> None:
        self.events: list[tuple] = []

    def message(self, text, level="info"):
        self.events.append(("message", level, text))

    def task_started(self, task, total):
        self.events.append(("task_started", task, total))

    def task_advanced(self, task, done):
        self.events.append(("task_advanced", task, done))

    def task_finished(self, task):
        self.events.append(("task_finished", task))

    def stage_started(self, stage, first_epoch, last_epoch, steps):
        self.events.append(("stage_started", stage, first_epoch, last_epoch, steps))

    def epoch_ended(self, stage, epoch, last_epoch, logs):
        self.events.append(("epoch_ended", stage, epoch, last_epoch, dict(logs)))

    def stage_finished(self, stage):
        self.events.append(("stage_finished", stage))

    def of(self, kind):
        return [e for e in self.events if e[0] == kind]


@pytest.fixture(scope="module")
def observed(tmp_path_factory):
    root = tmp_path_factory.mktemp("observed")
    data = make_image_folder(root / "data", ("a", "b"), per_class=6, val_per_class=2, size=24)
    recorder = Recorder()
    result = tlkit.train(
        data=str(data),
        base="mobilenet_v2",
        weights="none",
        image_size=32,
        epochs=2,
        batch_size=4,
        output=str(root / "runs"),
        observer=recorder,
    )
    return recorder, result


def test_the_observer_sees_messages_tasks_and_epochs(observed, capfd):
    recorder, result = observed
    texts = [e[2] for e in recorder.of("message")]
    assert any(t == f"Run directory: {result.run_dir}" for t in texts)
    assert any(t.startswith("Training path: features") for t in texts)
    started = {e[1]: e[2] for e in recorder.of("task_started")}
    assert started["decoding train images"] == 12 and started["computing val features"] == 4
    for task, total in started.items():  # every task advanced to its total, then finished
        assert sum(e[2] for e in recorder.of("task_advanced") if e[1] == task) == total
        assert ("task_finished", task) in recorder.events
    assert recorder.of("stage_started") == [("stage_started", "head", 1, 2, 3)]
    epochs = recorder.of("epoch_ended")
    assert [(e[1], e[2], e[3]) for e in epochs] == [("head", 1, 2), ("head", 2, 2)]
    assert [e[4]["val_accuracy"] for e in epochs] == result.history["val_accuracy"]
    last_epoch = recorder.events.index(epochs[-1])
    assert recorder.events.index(("stage_finished", "head")) > last_epoch


def test_keras_tensorboard_callback_writes_the_logs(observed):
    import tensorflow as tf

    _, result = observed
    seen = set()
    for split in ("train", "validation"):
        for path in (result.run_dir / "logs" / split).glob("events.out.tfevents.*"):
            for event in tf.compat.v1.train.summary_iterator(str(path)):
                seen.update((split, value.tag, event.step) for value in event.summary.value)
    assert {("train", "epoch_accuracy", 0), ("validation", "epoch_accuracy", 1)} <= seen


def test_verbose_false_prints_nothing(tmp_path, capfd):
    data = make_image_folder(tmp_path / "data", ("a", "b"), per_class=4, val_per_class=2, size=24)
    tlkit.train(
        data=str(data),
        base="mobilenet_v2",
        weights="none",
        image_size=32,
        epochs=1,
        batch_size=4,
        output=str(tmp_path / "runs"),
        verbose=False,
    )
    captured = capfd.readouterr()
    assert captured.out == "" and "Run directory" not in captured.err and "epoch" not in captured.err
