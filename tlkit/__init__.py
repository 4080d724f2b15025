"""tlkit — transfer learning for image classification on TensorFlow/Keras.

Importing ``tlkit`` is cheap: TensorFlow is imported only when a model is
built or trained.  Public names::

    tlkit.train(...), tlkit.build_model(...)      # the Python API
    tlkit.evaluate(...), tlkit.predict(...), tlkit.compare(...), tlkit.write_report(...), tlkit.export(...)
    tlkit.explain(...)                            # Grad-CAM heatmaps of images
    tlkit.lr_find(...)                            # a learning rate for tlkit.train, from one sweep
    tlkit.audit(...)                              # wrong labels, duplicates, leaks, outliers before training
    tlkit.tune(...)                               # an Optuna search of head, base and recipe on cached features
    tlkit.TrainingObserver                        # subclass it to follow a run (tlkit.train(observer=...))
    tlkit.RunDir                                  # a run directory's files, read and written safely
    tlkit.hookimpl                                # for plugin authors:
    tlkit.BaseSpec, tlkit.HeadSpec, tlkit.AugmentationSpec, tlkit.TrackerSpec
    tlkit.Param, tlkit.param                      # a build() parameter's help, choices and bounds (ge, gt,
                                                  # le, lt, as for training options), in its type or default:
                                                  # Annotated[int, tlkit.Param("width", ge=1)] = 256
                                                  # or  int = tlkit.param(256, ge=1, help="width")
    tlkit.ParamSpec                               # a declared parameter as tlkit reads it (HeadSpec.params)
    tlkit.keras_application_base                  # a keras.applications-style base in one call
    tlkit.bases.CAFFE, TF, TORCH, INTERNAL        # the standard preprocessings (tlkit.Preprocessing)
    tlkit.Tracker, tlkit.TrackedRun               # an experiment tracker (tlkit train --track NAME)
    tlkit.TlkitError
"""

from __future__ import annotations

from tlkit import bases
from tlkit.errors import TlkitError
from tlkit.io.rundir import RunDir
from tlkit.observer import TrainingObserver
from tlkit.registry.hookspecs import hookimpl
from tlkit.registry.keras_applications import Preprocessing, keras_application_base
from tlkit.registry.params import Param, ParamSpec, param
from tlkit.registry.specs import AugmentationSpec, BaseSpec, HeadSpec, TrackerSpec
from tlkit.tracking.tracker import TrackedRun, Tracker
from tlkit.version import __version__

_API = {
    "build_model",
    "train",
    "TrainConfig",
    "TrainResult",
    "list_specs",
    "evaluate",
    "EvaluationResult",
    "predict",
    "Prediction",
    "compare",
    "Comparison",
    "write_report",
    "export",
    "ExportResult",
    "lr_find",
    "LRFindResult",
    "explain",
    "ExplainResult",
    "audit",
    "AuditResult",
    "tune",
    "TuneResult",
    "serve",
}


def __getattr__(name: str):
    if name in _API:
        # lazy: the API is imported on first use; it imports the whole library (numpy, PIL), `import tlkit` stays light
        from tlkit import api

        return getattr(api, name)
    raise AttributeError(f"module 'tlkit' has no attribute {name!r}")


__all__ = [
    "AugmentationSpec",
    "BaseSpec",
    "HeadSpec",
    "Param",
    "ParamSpec",
    "Preprocessing",
    "RunDir",
    "TlkitError",
    "TrackedRun",
    "Tracker",
    "TrackerSpec",
    "TrainingObserver",
    "bases",
    "hookimpl",
    "keras_application_base",
    "param",
    "__version__",
    *sorted(_API),
]
