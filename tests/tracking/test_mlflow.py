"""``--track mlflow`` against a real MLflow server (a subprocess with its own SQLite store): a run
read back through ``MlflowClient`` (params, every epoch's metrics, artefacts, the logged model
predicting like ``model.keras``), evaluate adding to it, resume continuing it, an interrupted run
ending KILLED, tune's nested trials, and an unreachable server costing one warning and seconds."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

import tlkit
from tests.support import CLASS_COLORS, CLI_FAST, invoke_tlkit, make_plugin_dist
from tlkit.data.decode import load_image
from tlkit.io.rundir import RunDir
from tlkit.observer import TrainingObserver

mlflow = pytest.importorskip("mlflow")
MlflowClient = mlflow.MlflowClient
SIZE = 32


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """``mlflow server`` in a subprocess; :attr:`uri` waits (once) until it answers /health."""

    def __init__(self, root: Path) -> None:
        self.port = _free_port()
        self.root = root
        self.log = open(root / "server.log", "w")  # noqa: SIM115 - closed at teardown
        self.process = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("mlflow")),
                "server",
                "--backend-store-uri",
                f"sqlite:///{root / 'mlflow.db'}",
                "--artifacts-destination",
                str(root / "artifacts"),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                "1",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its uvicorn worker goes with it at teardown
        )
        self._up = False

    @property
    def uri(self) -> str:
        uri = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 90
        while not self._up:
            try:
                with urllib.request.urlopen(uri + "/health", timeout=2):
                    self._up = True
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    log = (self.root / "server.log").read_text()[-2000:]
                    raise RuntimeError("mlflow server did not start: " + log) from None
                time.sleep(0.3)
        return uri

    def stop(self) -> None:
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=3)  # it waits for the clients' open connections: no need here
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.log.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    started = Server(tmp_path_factory.mktemp("mlflow-server"))  # starts while the data is made
    yield started
    started.stop()


@pytest.fixture(scope="module")
def setup(tmp_path_factory, server):
    """(data, weights file, output root): MobileNetV2 at 32 px whose predictions differ per image."""
    from tlkit.testing import calibrated_mobilenet_v2_weights, make_image_folder

    root = tmp_path_factory.mktemp("tracked")
    data = make_image_folder(root / "data", classes=tuple(CLASS_COLORS), per_class=6, val_per_class=3, size=40)
    weights = calibrated_mobilenet_v2_weights(data / "train", SIZE, root / "mobilenet_v2_32.weights.h5")
    return data, weights, root


def _options(setup, **more):
    data, weights, root = setup
    return {
        "data": str(data),
        "base": "mobilenet_v2",
        "weights": str(weights),
        "image_size": SIZE,
        "batch_size": 8,
        "engine": "tensorflow",  # for a few images, cheaper than converting the base for ONNX Runtime
        "verbose": False,
        **more,
    }


class Lines(TrainingObserver):
    def __init__(self, stop_at_epoch: int = 0) -> None:
        self.lines: list[tuple[str, str]] = []
        self.stop_at_epoch = stop_at_epoch

    def message(self, text, level="info"):
        self.lines.append((level, text))

    def epoch_ended(self, stage, epoch, last_epoch, logs):
        if epoch == self.stop_at_epoch:
            raise KeyboardInterrupt  # what Ctrl-C does mid-run

    @property
    def warnings(self) -> list[str]:
        return [text for level, text in self.lines if level == "warning"]


@pytest.fixture(scope="module")
def tracked(setup, server):
    """A run tracked in MLflow: two head epochs and one fine-tuning epoch, the model registered."""
    lines = Lines()
    result = tlkit.train(
        **_options(setup, epochs=2, fine_tune_epochs=1, output=str(setup[2] / "runs")),
        track=["mlflow"],
        track_uri=server.uri,
        register_model="tlkit-test-model",
        observer=lines,
    )
    return result, lines


def test_the_run_reads_back_through_the_client(tracked, server, tmp_path):
    result, lines = tracked
    run_dir = RunDir(result.run_dir)
    status = result.metrics["trackers"]["mlflow"]
    assert status["status"] == "ok" and status["uri"] == server.uri and lines.warnings == []
    assert run_dir.read_tracking()["mlflow"]["run_id"] == status["run_id"]
    assert any(f"at {server.uri}" in text for _, text in lines.lines)  # one line says where it goes
    client = MlflowClient(server.uri)
    run = client.get_run(status["run_id"])
    assert run.info.status == "FINISHED" and run.info.run_name == run_dir.name

    params = run.data.params
    assert params["base"] == "mobilenet_v2" and params["epochs"] == "2" and params["fine_tune_epochs"] == "1"
    assert params["image_size"] == "32" and params["track"] == "mlflow" and params["metrics"] == "accuracy,f1"
    assert params["head_params.units"] == str(result.config.head_params["units"])

    tags = run.data.tags
    assert tags["tlkit.base"] == "mobilenet_v2" and tags["tlkit.head"] == "dense256"
    assert tags["tlkit.version"] == tlkit.__version__ and len(tags["tlkit.data_fingerprint"]) == 16
    assert tags["tlkit.stage.head"] == "1-2" and tags["tlkit.stage.fine_tune"] == "3-3"

    history, stages, epochs = run_dir.read_history()
    assert epochs == [1, 2, 3] and stages == ["head", "head", "fine_tune"]
    for key in ("loss", "accuracy", "val_loss", "val_accuracy", "val_f1"):
        points = client.get_metric_history(run.info.run_id, key)
        assert [p.step for p in points] == [1, 2, 3], key
        assert np.allclose([p.value for p in points], history[key], rtol=1e-6), key
    assert run.data.metrics["best_epoch"] == result.metrics["best_epoch"]

    names = _artifacts(client, run.info.run_id)
    expected = {"config.toml", "classes.json", "history.csv", "metrics.json", "report.html", "plots/accuracy.png"}
    assert expected <= names, names
    logged = json.loads(Path(client.download_artifacts(run.info.run_id, "metrics.json", str(tmp_path))).read_text())
    assert logged == run_dir.read_metrics()  # the metrics.json logged is the final one, tracker status included


def _artifacts(client, run_id: str, path: str | None = None) -> set[str]:
    found = set()
    for item in client.list_artifacts(run_id, path):
        found |= _artifacts(client, run_id, item.path) if item.is_dir else {item.path}
    return found


def test_the_logged_model_predicts_raw_pixels_like_model_keras(tracked, server, setup):
    import keras

    result, _ = tracked
    run_id = result.metrics["trackers"]["mlflow"]["run_id"]
    val = sorted((setup[0] / "val").rglob("*.png"))[:4]
    pixels = np.stack([load_image(p, SIZE) for p in val]).astype(np.float32)  # raw 0–255, as the model takes them
    expected = keras.saving.load_model(result.model_path).predict(pixels, verbose=0)
    assert np.ptp(expected, axis=0).max() > 1e-3  # the images get different probabilities: the check means something
    os.environ["MLFLOW_TRACKING_URI"] = server.uri
    try:
        model = mlflow.pyfunc.load_model(f"runs:/{run_id}/model")
    finally:
        del os.environ["MLFLOW_TRACKING_URI"]
    signature = model.metadata.signature.inputs.inputs[0]
    assert signature.shape == (-1, SIZE, SIZE, 3) and str(signature.type) == "float32"
    assert np.allclose(np.asarray(model.predict(pixels)), expected, atol=1e-5)
    versions = MlflowClient(server.uri).search_model_versions("name='tlkit-test-model'")
    assert [v.run_id for v in versions] == [run_id]


def test_evaluate_adds_its_metrics_to_the_tracked_run(tracked, server):
    result, _ = tracked
    run_id = result.metrics["trackers"]["mlflow"]["run_id"]
    client = MlflowClient(server.uri)
    evaluation = tlkit.evaluate(result.run_dir)
    metrics = client.get_run(run_id).data.metrics
    assert metrics["eval_accuracy"] == pytest.approx(evaluation.accuracy)
    assert metrics["eval_macro_avg_f1"] == pytest.approx(evaluation.macro["f1"])
    assert any("evaluation added to run" in note for note in evaluation.notes)
    assert {"evaluation/metrics.json", "evaluation/confusion_matrix.png"} <= _artifacts(client, run_id)
    tlkit.evaluate(result.run_dir, track=False)
    assert len(client.get_metric_history(run_id, "eval_accuracy")) == 1  # --no-track: nothing added


def test_an_unreachable_server_costs_one_warning_and_seconds(setup):
    dead = f"http://127.0.0.1:{_free_port()}"  # nobody listens there
    lines = Lines()
    result = tlkit.train(
        **_options(setup, epochs=1, output=str(setup[2] / "unreachable")),
        track=["mlflow"],
        track_uri=dead,
        observer=lines,
    )
    assert RunDir(result.run_dir).has_model()
    assert len(lines.warnings) == 1, lines.warnings
    assert lines.warnings[0].startswith("tracker 'mlflow' failed in run_started (ConnectionError: cannot reach")
    assert dead in lines.warnings[0] and lines.warnings[0].endswith("training goes on without it")
    status = RunDir(result.run_dir).read_metrics()["trackers"]["mlflow"]
    assert status["status"] == "failed" and dead in status["error"] and status["during"] == "run_started"
    assert status["seconds"] < 15
    with pytest.raises(tlkit.TlkitError, match="was not trained with --track"):
        tlkit.evaluate(result.run_dir, track=True)


def test_an_interrupted_run_ends_killed_and_resume_continues_it(setup, server):
    output = setup[2] / "interrupted"
    with pytest.raises(tlkit.TlkitError, match="interrupted"):
        tlkit.train(
            **_options(setup, epochs=2, output=str(output)),
            track=["mlflow"],
            track_uri=server.uri,
            observer=Lines(stop_at_epoch=1),
        )
    (run_path,) = output.iterdir()
    run_id = RunDir(run_path).read_tracking()["mlflow"]["run_id"]
    client = MlflowClient(server.uri)
    assert client.get_run(run_id).info.status == "KILLED"
    assert [p.step for p in client.get_metric_history(run_id, "val_loss")] == [1]

    result = tlkit.train(resume=run_path, verbose=False)
    assert result.metrics["trackers"]["mlflow"]["run_id"] == run_id
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["tlkit.stage.head"] == "1-2"
    assert [p.step for p in client.get_metric_history(run_id, "val_loss")] == [1, 2]


def test_tune_logs_the_study_as_a_parent_run_and_each_trial_as_a_nested_run(setup, server):
    result = tlkit.tune(
        **_options(setup, epochs=1, output=str(setup[2] / "tune")),
        search=["lr=1e-4..1e-2:log"],
        trials=2,
        track=["mlflow"],
        track_uri=server.uri,
        pruner="none",
    )
    client = MlflowClient(server.uri)
    studies = client.search_runs(
        [e.experiment_id for e in client.search_experiments()], f"tags.`tlkit.run_dir` = '{result.folder}'"
    )
    (parent,) = studies
    assert parent.info.status == "FINISHED" and parent.data.tags["tlkit.kind"] == "study"
    assert parent.data.params["search"] == "lr=1e-4..1e-2:log"
    assert parent.data.metrics["best_value"] == pytest.approx(result.best.value)
    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert sorted(int(c.data.tags["tlkit.trial.number"]) for c in children) == [0, 1]
    by_number = {t.number: t for t in result.trials}
    for child in children:
        trial = by_number[int(child.data.tags["tlkit.trial.number"])]
        assert float(child.data.params["lr"]) == pytest.approx(trial.params["lr"])
        assert child.data.metrics["score"] == pytest.approx(trial.value)
        assert child.info.status == "FINISHED"


def test_tune_resume_continues_the_same_parent_run(setup, server):
    first = tlkit.tune(
        **_options(setup, epochs=1, output=str(setup[2] / "tune-resumed")),
        search=["lr=1e-4..1e-2:log"],
        trials=1,
        track=["mlflow"],
        track_uri=server.uri,
        pruner="none",
    )
    saved = json.loads((first.folder / "study.json").read_text())["tracking"]["mlflow"]
    second = tlkit.tune(resume=first.folder, trials=2, pruner="none")  # --trials is the total
    assert json.loads((second.folder / "study.json").read_text())["tracking"]["mlflow"] == saved
    client = MlflowClient(server.uri)
    parent = client.get_run(saved["run_id"])
    assert parent.info.status == "FINISHED" and parent.data.metrics["trials"] == 2
    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{saved['run_id']}'")
    assert sorted(int(c.data.tags["tlkit.trial.number"]) for c in children) == [0, 1]


PLUGIN = """
import json
import tlkit

EVENTS = []


class Recorder(tlkit.Tracker):
    def run_started(self, run):
        EVENTS.append(("run_started", run.kind, run.config["base"], run.resumed))
        return {"token": "abc"}

    def epoch_ended(self, stage, epoch, last_epoch, logs):
        EVENTS.append(("epoch_ended", stage, epoch, sorted(logs)))

    def model_saved(self, path, example):
        EVENTS.append(("model_saved", path.name, tuple(example.shape), str(example.dtype)))

    def artifacts_written(self, paths, folder=""):
        EVENTS.append(("artifacts_written", folder, sorted(p.name for p in paths)))

    def run_ended(self, status, metrics):
        EVENTS.append(("run_ended", status, metrics["trackers"]["recorder"]["status"]))


@tlkit.hookimpl
def register_trackers(register):
    register(tlkit.TrackerSpec("recorder", lambda **options: Recorder(), "records events"))
"""


def test_a_plugin_tracker_gets_the_run_s_events(setup, tmp_path, monkeypatch):
    from tlkit.registry import manager

    root = make_plugin_dist(
        tmp_path / "site", "tlkit-recorder", "0.1", {"tlkit_recorder": PLUGIN}, {"recorder": "tlkit_recorder"}
    )
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.setattr(manager, "_REGISTRY", None)
    result = tlkit.train(**_options(setup, epochs=2, output=str(tmp_path / "runs")), track=["recorder"])
    import tlkit_recorder

    events = tlkit_recorder.EVENTS
    assert events[0] == ("run_started", "train", "mobilenet_v2", False)
    assert [e[:3] for e in events if e[0] == "epoch_ended"] == [("epoch_ended", "head", 1), ("epoch_ended", "head", 2)]
    assert ("model_saved", "model.keras", (2, SIZE, SIZE, 3), "float32") in events  # two validation images
    written = {name for e in events if e[0] == "artifacts_written" for name in e[2]}
    assert {"config.toml", "classes.json", "metrics.json", "accuracy.png", "report.html"} <= written
    assert events[-2] == ("artifacts_written", "", ["metrics.json"]) and events[-1] == ("run_ended", "finished", "ok")
    assert RunDir(result.run_dir).read_tracking() == {"recorder": {"token": "abc"}}
    assert result.metrics["trackers"]["recorder"]["token"] == "abc"


def test_an_unknown_tracker_is_refused_before_any_work(setup, tmp_path):
    output = tmp_path / "runs"
    result = invoke_tlkit("train", "--data", setup[0], *CLI_FAST, "--track", "mlfow", "--output", output)
    assert result.returncode == 1
    assert re.fullmatch(
        r"Error: unknown tracker 'mlfow' \(--track\); did you mean 'mlflow'\? — run 'tlkit list-trackers' to see all \d+",
        result.stderr.strip(),
    )
    assert not output.exists()


def test_a_password_in_mlflow_tracking_uri_is_used_but_never_shown_or_stored(setup, server, monkeypatch):
    """Basic auth in the environment's URI (an auth proxy's user:password@): the run is tracked, and
    neither the terminal, config.toml, tracking.json, metrics.json nor MLflow's params hold the password."""
    host = server.uri.split("://", 1)[1]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://ana:s3cret@{host}")
    lines = Lines()
    result = tlkit.train(
        **_options(setup, epochs=1, output=str(setup[2] / "password")), track=["mlflow"], observer=lines
    )
    status = result.metrics["trackers"]["mlflow"]
    assert status["status"] == "ok" and status["uri"] == f"http://ana:***@{host}", status
    assert any(f"at http://ana:***@{host}" in text for _, text in lines.lines)
    assert not any("s3cret" in text for _, text in lines.lines)
    for path in Path(result.run_dir).rglob("*"):
        if path.is_file() and path.suffix in (".json", ".toml", ".csv", ".html", ".log"):
            assert "s3cret" not in path.read_text(errors="replace"), path
    tracked = MlflowClient(server.uri).get_run(status["run_id"])
    assert "s3cret" not in str(tracked.data.params) and "s3cret" not in str(tracked.data.tags)
    # tracking.json holds the masked URI: evaluate reports through the environment's URI again.
    assert os.environ["MLFLOW_TRACKING_URI"] == f"http://ana:s3cret@{host}"  # logging the model kept it
    evaluation = tlkit.evaluate(result.run_dir)
    assert MlflowClient(server.uri).get_run(status["run_id"]).data.metrics["eval_accuracy"] == pytest.approx(
        evaluation.accuracy
    )
