"""The built-in MLflow tracker: ``tlkit train --track mlflow`` (``pip install "tlkit[mlflow]"``).

What one run records (docs/tracking.md): the resolved configuration as parameters (flattened:
``head_params.units``, lists as comma-separated text), every epoch's metrics with ``step`` = the
global epoch, a ``tlkit.stage.<stage>`` tag holding each stage's epochs (``"1-3"``), tags for
the base, head, data fingerprint, run directory and tlkit version, the run directory's files
(``config.toml``, ``classes.json``, ``history.csv``, ``metrics.json``, ``report.html``,
``plots/``) and the model in MLflow's TensorFlow flavour (the ``.keras`` file inside), with a
signature (float32 raw 0–255 pixels ``(-1, size, size, 3)`` → class probabilities) and an input
example, so ``mlflow.pyfunc`` and ``mlflow models predict`` work on raw images.  ``--register-model NAME`` registers it.

The tracking URI is ``--track-uri``, else ``MLFLOW_TRACKING_URI``, else MLflow's default
(``sqlite:///mlflow.db`` in the current folder, which ``mlflow ui`` there finds); the experiment is
``MLFLOW_EXPERIMENT_NAME`` (or ``MLFLOW_EXPERIMENT_ID``), else ``tlkit``.  A server is probed once,
with a short timeout, before the run starts, and MLflow's HTTP retries are bounded during tlkit's
calls (unless you set ``MLFLOW_HTTP_REQUEST_*`` yourself): an unreachable server costs seconds.
MLflow is imported only when a tracker is built, never by ``tlkit list-trackers``.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import tlkit
from tlkit.io.urls import is_masked, mask_password
from tlkit.tracking.tracker import flat_params

DEFAULT_EXPERIMENT = "tlkit"
PROBE_TIMEOUT_S = 5
#: MLflow's HTTP settings while tlkit calls it (its defaults retry a dead server for minutes).
QUICK_HTTP = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}
STATUS = {"finished": "FINISHED", "killed": "KILLED", "failed": "FAILED"}
_MAX_PARAM_LENGTH = 6000  # MLflow's limit on a parameter's value
_PARAMS_PER_BATCH = 100  # MLflow's limit on the parameters of one log_batch


@tlkit.hookimpl
def register_trackers(register):
    register(
        tlkit.TrackerSpec(
            "mlflow",
            build_mlflow,
            "MLflow: parameters, per-epoch metrics, files and the model (TensorFlow flavour, with a "
            "signature) in an MLflow run; --track-uri, --register-model",
            requires="mlflow",
            install="tlkit[mlflow]",
        )
    )


def build_mlflow(*, uri: str = "", register_model: str = "", **options: Any) -> MlflowTracker:
    """An :class:`MlflowTracker` reporting to ``uri`` (see the module for the default)."""
    return MlflowTracker(uri=uri, register_model=register_model)


@contextmanager
def quick_http() -> Iterator[None]:
    """For one call into MLflow: its HTTP retries bounded (where the user set none), and its own lines
    ("View run ... at", "Successfully registered model ...", info logs) kept off the terminal: the
    library never prints, the run says where it is tracked in one line of its own."""
    # lazy: MLflow only when a run is tracked; its own switch for its event logs (counted, so that
    # MLflow's code inside, which uses it too, does not switch them back on)
    from mlflow.utils.autologging_utils.logging_and_warnings import MlflowEventsAndWarningsBehaviorGlobally

    added = {key: value for key, value in QUICK_HTTP.items() if key not in os.environ}
    os.environ.update(added)
    alembic = logging.getLogger("alembic")  # MLflow's SQLite store logs its schema migrations
    level = alembic.level
    alembic.setLevel(max(alembic.getEffectiveLevel(), logging.WARNING))
    try:
        with (
            MlflowEventsAndWarningsBehaviorGlobally(
                disable_event_logs=True, disable_warnings=False, reroute_warnings=False
            ),
            contextlib.redirect_stdout(io.StringIO()),  # MlflowClient prints "View run ... at" there
        ):
            yield
    finally:
        for key in added:
            os.environ.pop(key, None)
        alembic.setLevel(level)


def tracking_uri(given: str = "") -> str:
    """``given``, else ``MLFLOW_TRACKING_URI``, else MLflow's default; a local path made absolute
    (so ``tlkit evaluate`` from another folder finds the same store)."""
    import mlflow  # lazy: MLflow only when a run is tracked

    uri = given or os.environ.get("MLFLOW_TRACKING_URI", "") or mlflow.get_tracking_uri()
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return "sqlite:///" + str(Path(uri[len("sqlite:///") :]).expanduser().resolve())
    if "://" not in uri and uri not in ("databricks",) and not uri.startswith(("databricks", "file:")):
        return Path(uri).expanduser().resolve().as_uri()
    return uri


def probe(uri: str) -> None:
    """Fail fast when an HTTP tracking server does not answer (any HTTP answer counts as up)."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        # urllib reads no user info (user:password@) from a URL; /health needs none
        parts = urllib.parse.urlsplit(uri)
        bare = urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
        with urllib.request.urlopen(bare.rstrip("/") + "/health", timeout=PROBE_TIMEOUT_S):
            pass
    except urllib.error.HTTPError:
        return  # it answered (a proxy or an auth layer may refuse /health)
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ConnectionError(
            f"cannot reach the MLflow server at {mask_password(uri)} ({reason}); is it running?"
        ) from None


class MlflowTracker(tlkit.Tracker):
    """One run (or study) in MLflow, through ``MlflowClient`` (MLflow's active run is never touched)."""

    def __init__(self, *, uri: str = "", register_model: str = "") -> None:
        self.given_uri = uri
        self.register_model = register_model
        self.uri = ""
        self.shown_uri = ""
        self.client: Any = None
        self.run_id = ""
        self.experiment_id = ""
        self.kind = "train"
        self.run_name = ""
        self._stage_first: dict[str, int] = {}
        self._say: Any = lambda text: None

    # -- connecting ------------------------------------------------------------
    def _connect(self, uri: str) -> None:
        from mlflow import MlflowClient  # lazy: MLflow only when a run is tracked

        self.uri = tracking_uri(uri)
        self.shown_uri = mask_password(self.uri)  # a password (say, in MLFLOW_TRACKING_URI) is never shown or stored
        probe(self.uri)
        self.client = MlflowClient(tracking_uri=self.uri)

    def _stored_uri(self, run: tlkit.TrackedRun) -> str:
        """The URI the run was tracked at (tracking.json), unless its password was masked there:
        then the same as at the start, ``--track-uri`` or ``MLFLOW_TRACKING_URI``."""
        stored = str(run.state.get("uri") or "")
        return self.given_uri if not stored or is_masked(stored) else stored

    def _experiment(self) -> tuple[str, str]:
        """(id, name) of the experiment runs go to, created when missing."""
        from mlflow.exceptions import MlflowException  # lazy: MLflow only when a run is tracked

        if os.environ.get("MLFLOW_EXPERIMENT_ID"):
            experiment_id = os.environ["MLFLOW_EXPERIMENT_ID"]
            return experiment_id, self.client.get_experiment(experiment_id).name
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id, name
        try:
            return self.client.create_experiment(name), name
        except MlflowException:  # another run created it a moment ago
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise
            return found.experiment_id, name

    # -- the run ------------------------------------------------------------------
    def run_started(self, run: tlkit.TrackedRun) -> Mapping[str, Any]:
        from mlflow.entities import Param  # lazy: MLflow only when a run is tracked

        self._say, self.kind, self.run_name = run.say, run.kind, run.name
        with quick_http():
            self._connect(self._stored_uri(run))
            if run.state.get("run_id"):  # --resume: the same MLflow run goes on
                self.run_id = str(run.state["run_id"])
                found = self.client.get_run(self.run_id)
                self.experiment_id = found.info.experiment_id
                self._stage_first = _stage_starts(found.data.tags)
                self.client.update_run(self.run_id, status="RUNNING")
                where = f"MLflow: resuming run {self.run_id} at {self.shown_uri}"
            else:
                self.experiment_id, experiment = self._experiment()
                tags = {**run.tags, "mlflow.source.name": f"tlkit {'tune' if run.kind == 'study' else 'train'}"}
                created = self.client.create_run(self.experiment_id, run_name=run.name, tags=tags)
                self.run_id = created.info.run_id
                params = [Param(k, v[:_MAX_PARAM_LENGTH]) for k, v in flat_params(run.config).items()]
                for i in range(0, len(params), _PARAMS_PER_BATCH):
                    self.client.log_batch(self.run_id, params=params[i : i + _PARAMS_PER_BATCH])
                where = f"MLflow: run {run.name} ({self.run_id}) in experiment {experiment!r} at {self.shown_uri}"
        self._say(where)
        return {"run_id": self.run_id, "experiment_id": self.experiment_id, "uri": self.shown_uri}

    def epoch_ended(self, stage: str, epoch: int, last_epoch: int, logs: Mapping[str, float]) -> None:
        from mlflow.entities import Metric, RunTag  # lazy: MLflow only when a run is tracked

        now = int(time.time() * 1000)
        metrics = [Metric(key, float(value), now, epoch) for key, value in logs.items() if _is_number(value)]
        first = self._stage_first.setdefault(stage, epoch)
        with quick_http():
            self.client.log_batch(
                self.run_id, metrics=metrics, tags=[RunTag(f"tlkit.stage.{stage}", f"{first}-{epoch}")]
            )

    def model_saved(self, path: Path, example: Any) -> None:
        import keras  # lazy: Keras only when a trained model is logged
        import numpy as np
        import tensorflow as tf  # lazy: its version goes into the model's requirements
        from mlflow.models import Model, ModelSignature
        from mlflow.tracking._tracking_service.utils import _use_tracking_uri
        from mlflow.types import Schema, TensorSpec

        model = keras.saving.load_model(path, compile=False)
        _, height, width, channels = model.input_shape
        signature = ModelSignature(
            inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, height, width, channels))]),
            outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, model.output_shape[-1]))]),
        )
        # _use_tracking_uri's exit unsets MLFLOW_TRACKING_URI (MLflow 3.17), so _environ, entered
        # first and left last, puts the user's value back: later runs in this process go to the same store
        with (
            quick_http(),
            _environ(MLFLOW_EXPERIMENT_ID=self.experiment_id, MLFLOW_TRACKING_URI=self.uri),
            _use_tracking_uri(self.uri),
        ):
            info = Model.log(
                None,
                _TensorFlowFlavour,
                flavor_name="mlflow.tensorflow",
                validate_serving_input=False,  # it would load the model once more and run it: seconds
                name="model",
                run_id=self.run_id,
                model=model,
                signature=signature,
                input_example=None if example is None else np.asarray(example[:1], dtype=np.float32),
                # Given, so MLflow does not load the model in a subprocess to infer them.
                pip_requirements=[f"keras=={keras.__version__}", f"tensorflow=={tf.__version__}"],
                registered_model_name=self.register_model or None,
                await_registration_for=0,
            )
            self.client.set_tag(self.run_id, "tlkit.model_uri", info.model_uri)
        if self.register_model:
            version = getattr(info, "registered_model_version", None)
            self._say(f"MLflow: model registered as {self.register_model!r} version {version}")

    def artifacts_written(self, paths: Sequence[Path], folder: str = "") -> None:
        with quick_http():
            for path in paths:
                self.client.log_artifact(self.run_id, str(path), artifact_path=folder or None)

    def trial_finished(self, trial: Any, best: Any) -> None:
        """A study's trial: a nested run (params, the score, the hold-out accuracy per epoch)."""
        from mlflow.entities import Metric, Param  # lazy: MLflow only when a run is tracked

        if self.kind != "study":
            return
        now = int(time.time() * 1000)
        metrics = [Metric("holdout_accuracy", float(v), now, i) for i, v in enumerate(trial.intermediate, start=1)]
        if trial.value is not None:
            metrics.append(Metric("score", float(trial.value), now, 0))
        tags = {
            "mlflow.parentRunId": self.run_id,
            "tlkit.kind": "trial",
            "tlkit.trial.number": str(trial.number),
            "tlkit.trial.state": trial.state,
        }
        with quick_http():
            child = self.client.create_run(
                self.experiment_id, run_name=f"{self.run_name}-trial-{trial.number}", tags=tags
            )
            params = [Param(k, v[:_MAX_PARAM_LENGTH]) for k, v in flat_params(trial.params).items()]
            self.client.log_batch(child.info.run_id, metrics=metrics, params=params[:_PARAMS_PER_BATCH])
            ended = "FAILED" if trial.state == "failed" else "FINISHED"
            self.client.set_terminated(child.info.run_id, status=ended)

    def run_ended(self, status: str, metrics: Mapping[str, Any]) -> None:
        from mlflow.entities import Metric  # lazy: MLflow only when a run is tracked

        now = int(time.time() * 1000)
        summary = [Metric(k, float(v), now, 0) for k, v in metrics.items() if _is_number(v)]
        with quick_http():
            if summary:
                self.client.log_batch(self.run_id, metrics=summary)
            self.client.set_terminated(self.run_id, status=STATUS.get(status, "FAILED"))

    def evaluation_finished(self, run: tlkit.TrackedRun, metrics: Mapping[str, float], files: Sequence[Path]) -> None:
        from mlflow.entities import Metric  # lazy: MLflow only when a run is tracked

        if not run.state.get("run_id"):
            raise ValueError(f"{run.path}: the run's MLflow run id is unknown (its tracking failed at the start)")
        now = int(time.time() * 1000)
        with quick_http():
            self._connect(self._stored_uri(run))
            run_id = str(run.state["run_id"])
            self.client.log_batch(run_id, metrics=[Metric(f"eval_{k}", float(v), now, 0) for k, v in metrics.items()])
            for path in files:
                self.client.log_artifact(run_id, str(path), artifact_path="evaluation")
        run.say(f"MLflow: evaluation added to run {run_id} at {self.shown_uri}")


class _TensorFlowFlavour:
    """MLflow's TensorFlow flavour as ``Model.log`` takes it, without its check of the input example.

    The TensorFlow flavour saves a Keras 3 model as ``.keras`` and serves it through ``mlflow.pyfunc``;
    MLflow 3.17's Keras flavour fails with an input example (it writes the example before it makes
    the model's folder).  ``Model.log`` hands ``validate_serving_input`` on to ``save_model``, which
    does not take it: dropped here.
    """

    @staticmethod
    def save_model(*, validate_serving_input: bool = True, **options: Any) -> None:
        import mlflow.tensorflow  # lazy: MLflow's TensorFlow flavour imports TensorFlow

        mlflow.tensorflow.save_model(**options)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _stage_starts(tags: Mapping[str, str]) -> dict[str, int]:
    """Each stage's first epoch, from the ``tlkit.stage.<stage>`` tags of a run being resumed."""
    starts = {}
    for key, value in tags.items():
        if key.startswith("tlkit.stage.") and value.split("-")[0].isdigit():
            starts[key[len("tlkit.stage.") :]] = int(value.split("-")[0])
    return starts


@contextmanager
def _environ(**values: str) -> Iterator[None]:
    """``values`` set in ``os.environ`` for the block (MLflow's fluent model logging reads the
    experiment from there), the previous values back afterwards."""
    before = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
