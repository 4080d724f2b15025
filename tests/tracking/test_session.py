"""The tracker guard and fan-out, without training: a failing tracker is one warning and a status,
never a stopped run; events reach the trackers only once the run started; names are checked."""

from __future__ import annotations

import inspect
import types
from pathlib import Path

import pytest

import tlkit
from tlkit.config.options import TrainConfig
from tlkit.io.rundir import RunDir
from tlkit.observer import TrainingObserver
from tlkit.registry.manager import Registry
from tlkit.tracking import runs
from tlkit.tracking.session import TrackingSession, _FanOut
from tlkit.tracking.tracker import TrackedRun, flat_params


class Lines(TrainingObserver):
    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def message(self, text: str, level: str = "info") -> None:
        self.lines.append((level, text))

    @property
    def warnings(self) -> list[str]:
        return [text for level, text in self.lines if level == "warning"]


class Recorder(tlkit.Tracker):
    def __init__(self, fail_in: str = "") -> None:
        self.fail_in = fail_in
        self.calls: list[tuple] = []

    def _record(self, name: str, *args) -> None:
        self.calls.append((name, *args))
        if name == self.fail_in:
            raise ConnectionError(f"server gone during {name}\nsecond line")

    def run_started(self, run):
        self._record("run_started", run)
        return {"run_id": "r-1"}

    def epoch_ended(self, stage, epoch, last_epoch, logs):
        self._record("epoch_ended", stage, epoch, dict(logs))

    def run_ended(self, status, metrics):
        self._record("run_ended", status)


def _run(tmp_path: Path) -> TrackedRun:
    return TrackedRun(kind="train", name="r", path=tmp_path, config={"base": "b", "head": "h"})


def test_a_failing_tracker_is_one_warning_and_a_status_and_is_called_no_more(tmp_path):
    lines, good, bad = Lines(), Recorder(), Recorder(fail_in="epoch_ended")
    session = TrackingSession({"good": good, "bad": bad}, lines)
    session.observer.epoch_ended("head", 1, 3, {"loss": 1.0})  # before the start: the trackers hear nothing
    assert good.calls == [] and bad.calls == []

    session.start(_run(tmp_path))
    for epoch in (1, 2, 3):
        session.observer.epoch_ended("head", epoch, 3, {"loss": 1.0 / epoch})
    session.end("finished", {})

    assert [c[0] for c in good.calls] == ["run_started", "epoch_ended", "epoch_ended", "epoch_ended", "run_ended"]
    assert [c[0] for c in bad.calls] == ["run_started", "epoch_ended"]  # switched off after its first failure
    assert lines.warnings == [
        "tracker 'bad' failed in epoch_ended (ConnectionError: server gone during epoch_ended); "
        "training goes on without it"
    ]
    assert session.statuses["bad"]["status"] == "failed"
    assert session.statuses["bad"]["error"] == "ConnectionError: server gone during epoch_ended"
    assert session.statuses["good"]["status"] == "ok" and session.statuses["good"]["run_id"] == "r-1"


def test_ctrl_c_inside_a_tracker_still_stops_the_run(tmp_path):
    class Stops(Recorder):
        def epoch_ended(self, stage, epoch, last_epoch, logs):
            raise KeyboardInterrupt

    session = TrackingSession({"stops": Stops()}, Lines())
    session.start(_run(tmp_path))
    with pytest.raises(KeyboardInterrupt):
        session.observer.epoch_ended("head", 1, 1, {})


def test_state_is_kept_and_handed_back(tmp_path):
    run_dir = RunDir(tmp_path)
    first = Recorder()
    TrackingSession({"rec": first}, Lines()).start(_run(tmp_path), run_dir.read_tracking(), run_dir.write_tracking)
    assert run_dir.read_tracking() == {"rec": {"run_id": "r-1"}}
    resumed = Recorder()
    TrackingSession({"rec": resumed}, Lines()).start(_run(tmp_path), run_dir.read_tracking(), run_dir.write_tracking)
    assert resumed.calls[0][1].state == {"run_id": "r-1"}


def test_the_fan_out_forwards_every_observer_event():
    events = [name for name, _ in inspect.getmembers(TrainingObserver, inspect.isfunction) if not name.startswith("_")]
    missing = [name for name in events if name not in vars(_FanOut)]
    assert missing == [], f"_FanOut must forward {missing} to the trackers"


def _plugin(*specs: tlkit.TrackerSpec) -> types.ModuleType:
    """A plugin module registering ``specs``."""
    module = types.ModuleType("fake_trackers")

    @tlkit.hookimpl
    def register_trackers(register):
        for spec in specs:
            register(spec)

    module.register_trackers = register_trackers  # type: ignore[attr-defined]
    return module


def test_interrupted_and_failed_runs_end_their_tracked_runs(tlkit_plugin, tmp_path):
    recorders: list[Recorder] = []

    def build(**options) -> Recorder:
        recorders.append(Recorder())
        return recorders[-1]

    tlkit_plugin(_plugin(tlkit.TrackerSpec("rec", build, "records")))
    config = TrainConfig(track=["rec"])
    for raised, status in ((KeyboardInterrupt(), "killed"), (ValueError("bug"), "failed")):
        with pytest.raises(type(raised)), runs.tracked(config, Lines()) as session:
            session.start(_run(tmp_path))
            raise raised
        assert recorders[-1].calls[-1] == ("run_ended", status)


def test_a_build_that_raises_is_a_failed_tracker_but_a_missing_library_refuses_the_run(tlkit_plugin):
    def broken(**options):
        raise RuntimeError("no credentials")

    tlkit_plugin(
        _plugin(
            tlkit.TrackerSpec("broken", broken, "raises"),
            tlkit.TrackerSpec("absent", broken, "needs a module", requires="no_such_module_xyz", install="x[absent]"),
        )
    )
    lines = Lines()
    session = TrackingSession.open(["broken"], observer=lines)
    assert session.statuses["broken"]["status"] == "failed" and not session.active
    assert lines.warnings == [
        "tracker 'broken' failed in build (RuntimeError: no credentials); training goes on without it"
    ]
    with pytest.raises(tlkit.TlkitError, match=r'^--track absent needs no_such_module_xyz: pip install "x\[absent\]"$'):
        TrackingSession.open(["absent"])
    with pytest.raises(tlkit.TlkitError, match=r"unknown tracker 'brokn' \(--track\); did you mean 'broken'\?"):
        TrackingSession.open(["brokn"])


def test_the_builtin_mlflow_tracker_is_registered_like_any_plugin():
    spec = Registry().tracker("mlflow")
    assert spec.plugin == "builtin_trackers" and spec.requires == "mlflow" and spec.install == "tlkit[mlflow]"


def test_params_are_flat_text():
    assert flat_params({"a": 1, "b": [1, 2], "c": {"d": True, "e": None}, "f": 0.5}) == {
        "a": "1",
        "b": "1,2",
        "c.d": "true",
        "c.e": "",
        "f": "0.5",
    }


def test_register_model_and_track_uri_need_a_tracker():
    for key in ("register_model", "track_uri"):
        with pytest.raises(tlkit.TlkitError, match="needs a tracker: add --track mlflow"):
            TrainConfig(**{key: "x"}).validate()
    TrainConfig(track=["mlflow"], register_model="x").validate()


def test_a_password_in_the_track_uri_is_refused_without_being_shown():
    with pytest.raises(tlkit.TlkitError) as caught:
        TrainConfig(track=["mlflow"], track_uri="https://ana:s3cret@mlflow.example.com").validate()
    message = str(caught.value)
    assert "s3cret" not in message and "https://ana:***@mlflow.example.com holds a password" in message
    assert "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD" in message
    TrainConfig(track=["mlflow"], track_uri="https://ana@mlflow.example.com:5000/path").validate()  # no password


def test_urls_are_masked_wherever_a_password_sits():
    from tlkit.io.urls import has_password, mask_password

    assert mask_password("postgresql://tlkit:pw@db:5432/optuna") == "postgresql://tlkit:***@db:5432/optuna"
    assert mask_password("failed (HTTPError: 401 for http://u:p%40ss@h:5000/api)") == (
        "failed (HTTPError: 401 for http://u:***@h:5000/api)"
    )
    for clean in ("http://127.0.0.1:5000", "sqlite:////tmp/a:b@c/mlflow.db", "https://u@host/x", "databricks"):
        assert mask_password(clean) == clean and not has_password(clean)
    assert has_password("https://u:p@host") and has_password(mask_password("https://u:p@host"))


def test_a_failing_tracker_s_warning_masks_a_password(tmp_path):
    class Leaky(tlkit.Tracker):
        def run_started(self, run):
            raise ConnectionError("cannot reach http://ana:s3cret@10.0.0.1:5000")

    lines = Lines()
    session = TrackingSession({"leaky": Leaky()}, lines)
    session.start(_run(tmp_path))
    (warning,) = lines.warnings
    assert "s3cret" not in warning and "http://ana:***@10.0.0.1:5000" in warning
    assert "s3cret" not in str(session.statuses)


def test_evaluation_metrics_are_the_headline_numbers():
    values = {"accuracy": 0.5, "top_k": 3, "seconds": 2.0, "macro_avg": {"f1": 0.25}, "notes": ["x"], "tta": None}
    assert runs.evaluation_metrics(values) == {"accuracy": 0.5, "macro_avg_f1": 0.25}
