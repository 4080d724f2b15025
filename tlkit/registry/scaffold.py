"""``tlkit new-plugin NAME --kind head|base|augmentation|tracker``: scaffold a working plugin package.

The package registers one head, base, augmentation or experiment tracker called NAME through the
``tlkit`` entry-point group, written with tlkit's public helpers for plugin
authors, and ships a README and a passing test built on tlkit's pytest fixtures.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

from tlkit.errors import TlkitError
from tlkit.io.files import write_text

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,40}$")

#: What ``--kind`` accepts; the first is the default.
KINDS = ("head", "base", "augmentation", "tracker")


# -- the plugin module, one per kind -----------------------------------------
def _head_module(name: str) -> str:
    return textwrap.dedent(f'''\
        """tlkit plugin: the '{name}' head (global average pooling → Dense → Dropout → softmax)."""

        from typing import Annotated

        import tlkit


        @tlkit.hookimpl
        def register_heads(register):
            register(
                tlkit.HeadSpec(
                    name="{name}",
                    build=build_head,
                    description="GlobalAveragePooling → Dense(units, relu) → Dropout → softmax",
                )
            )


        # The keyword-only arguments are the head's parameters (`tlkit info {name}`,
        # `--head-param units=256`): the default is the Python default, the type and
        # tlkit.Param(help, choices=, ge=, gt=, le=, lt=) say how tlkit parses and
        # checks a user's value (bounds: >=, >, <=, <).
        def build_head(
            features,
            num_classes: int,
            *,
            units: Annotated[int, tlkit.Param("width of the hidden layer", ge=1)] = 128,
            dropout: Annotated[float, tlkit.Param("dropout rate", ge=0.0, lt=1.0)] = 0.2,
        ):
            """Keras functional code on the frozen base's feature map; returns the softmax output."""
            from keras import layers  # import Keras here, not at the top: listing stays fast

            x = layers.GlobalAveragePooling2D(name="{name}_pool")(features)
            x = layers.Dense(units, activation="relu", name="{name}_dense")(x)
            x = layers.Dropout(dropout, name="{name}_dropout")(x)
            return layers.Dense(num_classes, activation="softmax", name="{name}_predictions")(x)
        ''')


def _base_module(name: str) -> str:
    return textwrap.dedent(f'''\
        """tlkit plugin: the '{name}' base (Keras's MobileNetV2 at width 0.35: tiny and fast).

        Replace the constructor, options and numbers with your own model's; a
        constructor is a ``keras.applications`` name, a dotted import path or a
        callable taking ``include_top``, ``weights`` and ``input_shape``.
        """

        import tlkit
        from tlkit.registry.keras_applications import TF


        @tlkit.hookimpl
        def register_bases(register):
            register(
                tlkit.keras_application_base(
                    "{name}",
                    "MobileNetV2",
                    options={{"alpha": 0.35}},  # passed on to the constructor
                    preprocessing=TF,  # raw 0–255 RGB → −1…1; or CAFFE, TORCH, INTERNAL (tlkit.registry.keras_applications)
                    description="MobileNetV2 at width 0.35 (~60% ImageNet top-1): tiny and fast",
                    family="mobilenet",
                    weights_sizes=(96, 128, 160, 192, 224),  # input sizes that have ImageNet weights
                    param_count=410_208,  # count_params() of the headless model (its test checks it)
                    weights_file="mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5",
                    feature_shape="7×7×1280 at 224 px",
                )
            )
        ''')


def _augmentation_module(name: str) -> str:
    return textwrap.dedent(f'''\
        """tlkit plugin: the '{name}' augmentation (random Gaussian noise on the pixels, training only)."""

        from typing import Annotated

        import tlkit


        @tlkit.hookimpl
        def register_augmentations(register):
            register(
                tlkit.AugmentationSpec(
                    name="{name}",
                    build=build_augmentation,
                    description="random Gaussian noise on the pixels (training only)",
                )
            )


        # The keyword-only arguments are the augmentation's parameters
        # (`tlkit info {name}`, `--aug {name}:stddev=0.05`).
        def build_augmentation(
            seed: int,
            *,
            stddev: Annotated[float, tlkit.Param("noise standard deviation as a fraction of 0–255", ge=0.0, le=1.0)] = 0.03,
        ):
            """One Keras layer: a batch of 0–255 pixels in, the same shape out; the identity at inference."""
            import keras  # import Keras here, not at the top: listing stays fast

            # Keras's GaussianNoise takes a stddev of at most 1, so it works on 0–1 pixels.
            return keras.Sequential(
                [
                    keras.layers.Rescaling(1 / 255),
                    keras.layers.GaussianNoise(stddev, seed=seed),
                    keras.layers.Rescaling(255.0),
                ],
                name="{name}_noise",
            )
        ''')


def _tracker_module(name: str) -> str:
    return textwrap.dedent(f'''\
        """tlkit plugin: the '{name}' experiment tracker (each event of a run as one JSON line in a file).

        Replace the file writes with your tracking service's client calls.
        """

        import json
        import time
        from pathlib import Path

        import tlkit


        @tlkit.hookimpl
        def register_trackers(register):
            register(
                tlkit.TrackerSpec(
                    name="{name}",
                    build=build_tracker,
                    description="each event of a run as a JSON line (--track-uri FILE; default: events.jsonl in the run)",
                    # requires="yourclient", install="pip install yourclient",  # checked before any work
                )
            )


        def build_tracker(*, uri: str = "", register_model: str = "", **options):
            """One tracker per run: ``uri`` is --track-uri, ``register_model`` --register-model ("" when not given)."""
            return JsonLinesTracker(uri)


        class JsonLinesTracker(tlkit.Tracker):
            """Override the events you record; every other one is a no-op.

            Keep calls quick (short timeouts): tlkit turns any exception into one warning and stops
            calling the tracker for the rest of the run; the run itself always goes on.
            """

            def __init__(self, uri: str) -> None:
                self.uri = uri
                self.path: Path | None = None

            def _write(self, event: str, **fields) -> None:
                with open(self.path, "a", encoding="utf-8") as out:
                    out.write(json.dumps({{"event": event, "time": time.time(), **fields}}, default=str) + "\\n")

            def run_started(self, run):
                # run.state is what this returned when the run started before (--resume, tlkit evaluate)
                self.path = Path(run.state.get("file") or self.uri or run.path / "events.jsonl")
                self._write("run_started", kind=run.kind, name=run.name, resumed=run.resumed, config=run.config)
                run.say(f"{name}: events of {{run.name}} go to {{self.path}}")
                return {{"file": str(self.path)}}  # tlkit keeps it and hands it back as run.state

            def epoch_ended(self, stage, epoch, last_epoch, logs):
                self._write("epoch", stage=stage, epoch=epoch, metrics=dict(logs))

            def model_saved(self, path, example):
                self._write("model_saved", path=str(path))

            def run_ended(self, status, metrics):
                self._write("run_ended", status=status, metrics=dict(metrics))

            def evaluation_finished(self, run, metrics, files):
                self.path = Path(run.state["file"])
                self._write("evaluation", metrics=dict(metrics), files=[str(f) for f in files])
        ''')


# -- its tests, one per kind ---------------------------------------------------
_TEST_DOC = '''"""Tests for the '{name}' {kind}, using tlkit's pytest fixtures (tlkit_image_folder, tlkit_plugin)."""
'''

_TEST_HEAD = """
import tlkit

import {module}


def test_head_is_registered(tlkit_plugin):
    spec = tlkit_plugin({module}).heads["{name}"]
    assert spec.description
    assert [p.name for p in spec.params] == ["units", "dropout"]
"""

_TEST_BASE = """
import numpy as np
import tlkit

import {module}


def test_base_is_registered_and_builds_headless(tlkit_plugin):
    spec = tlkit_plugin({module}).bases["{name}"]
    model = spec.build((32, 32, 3), None)  # a tiny input and random weights: fast and offline
    assert model.count_params() == spec.param_count
    x = np.full((1, 32, 32, 3), 128.0, dtype="float32")  # raw 0–255 pixels
    for layer in spec.preprocess():
        x = layer(x)
    assert len(model(x, training=False).shape) == 4  # a feature map: no pooling, no classifier
"""

_TEST_AUGMENTATION = """
import numpy as np
import tlkit

import {module}


def test_augmentation_is_registered_and_idle_at_inference(tlkit_plugin):
    spec = tlkit_plugin({module}).augmentations["{name}"]
    layer = spec.build(0, **{{p.name: p.default for p in spec.params}})
    images = np.full((2, 16, 16, 3), 128.0, dtype="float32")
    np.testing.assert_allclose(np.asarray(layer(images, training=False)), images, rtol=1e-5)
    changed = np.asarray(layer(images, training=True))
    assert changed.shape == images.shape and not np.allclose(changed, images)
"""

_TEST_TRACKER = """
import json
from pathlib import Path

import tlkit

import {module}


def test_tracker_is_registered_and_writes_each_event(tlkit_plugin, tmp_path):
    spec = tlkit_plugin({module}).trackers["{name}"]
    tracker = spec.build(uri="", register_model="")
    state = tracker.run_started(tlkit.TrackedRun(kind="train", name="r", path=tmp_path, config={{"base": "b"}}))
    tracker.epoch_ended("head", 1, 1, {{"loss": 0.5}})
    tracker.run_ended("finished", {{"val_accuracy": 1.0}})
    events = [json.loads(line) for line in Path(state["file"]).read_text().splitlines()]
    assert [e["event"] for e in events] == ["run_started", "epoch", "run_ended"]
    assert events[1]["metrics"] == {{"loss": 0.5}} and events[2]["status"] == "finished"
"""

# Every kind's package also trains a tiny model with its plugin in it.
_TEST_TRAIN = """

def test_trains_end_to_end(tlkit_plugin, tlkit_image_folder, tmp_path):
    tlkit_plugin({module})
    data = tlkit_image_folder(classes=("red", "green"), per_class=6, size=32)
    result = tlkit.train(
        data=str(data), {choice},
        weights="none", image_size=32, epochs=1, batch_size=4, output=str(tmp_path / "runs"), verbose=False,
    )
    assert result.metrics["epochs_run"] == 1
    assert result.model_path.is_file()
"""

# What each kind's end-to-end test checks besides (a tracker's failures are warnings, not errors).
_TEST_TRAIN_MORE = {
    "tracker": """    assert result.metrics["trackers"]["{name}"]["status"] == "ok"
    assert (result.run_dir / "events.jsonl").is_file()
""",
}

_TESTS = {
    "head": (_TEST_HEAD, 'base="mobilenet_v2", head="{name}", head_params={{"units": 16}}'),
    "base": (_TEST_BASE, 'base="{name}", head="linear"'),
    "augmentation": (_TEST_AUGMENTATION, 'base="mobilenet_v2", head="linear", augmentations=["{name}"]'),
    "tracker": (_TEST_TRACKER, 'base="mobilenet_v2", head="linear", track=["{name}"]'),
}


def _test(kind: str, name: str, module: str) -> str:
    body, choice = _TESTS[kind]
    fields = {"kind": kind, "name": name, "module": module}
    train = _TEST_TRAIN.replace("{choice}", choice) + _TEST_TRAIN_MORE.get(kind, "")
    return (_TEST_DOC + body + train).format(**fields)


# -- packaging -------------------------------------------------------------------
def _pyproject(kind: str, dist: str, module: str, name: str) -> str:
    return textwrap.dedent(f"""\
        [build-system]
        requires = ["setuptools>=61"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "{dist}"
        version = "0.1.0"
        description = "A tlkit plugin that adds the '{name}' {kind}."
        readme = "README.md"
        requires-python = ">=3.10"
        dependencies = ["tlkit"]

        [project.optional-dependencies]
        test = ["pytest"]

        # This line is what makes tlkit find the plugin.
        [project.entry-points.tlkit]
        {name} = "{module}"

        [tool.setuptools]
        packages = ["{module}"]

        [tool.pytest.ini_options]
        # TensorFlow and Keras warn about their own internals on every call: not this plugin's business.
        filterwarnings = [
          "ignore::DeprecationWarning:tensorflow.*",
          "ignore::DeprecationWarning:keras.*",
        ]
        """)


_TRY = {
    "head": "tlkit train --data data --head {name} --head-param units=256",
    "base": "tlkit train --data data --base {name} --image-size 160",
    "augmentation": "tlkit train --data data --aug {name}:stddev=0.05",
    "tracker": "tlkit train --data data --track {name}",
}


def _readme(kind: str, name: str, dist: str, module: str) -> str:
    return textwrap.dedent(f"""\
        # {dist}

        A [tlkit](https://pypi.org/project/tlkit/) plugin that adds the `{name}` {kind}
        (in `{module}/__init__.py`).

        ```console
        pip install -e .
        tlkit plugins                 # shows {name} with its version and hooks
        tlkit info {name}
        {_TRY[kind].format(name=name)}
        pip install -e ".[test]" && pytest
        ```
        """)


_MODULES = {
    "head": _head_module,
    "base": _base_module,
    "augmentation": _augmentation_module,
    "tracker": _tracker_module,
}


def new_plugin(name: str, directory: str | Path = ".", kind: str = "head") -> Path:
    """Create ``directory/tlkit-<name>/``, a working plugin package adding one ``kind``; return its path.

    ``kind`` is ``"head"``, ``"base"``, ``"augmentation"`` or ``"tracker"``; ``name`` becomes
    the registered name (and the entry point's), ``tlkit_<name>`` the module.
    """
    if kind not in KINDS:
        raise TlkitError(f"unknown plugin kind {kind!r}; use one of: {', '.join(KINDS)}")
    if not _NAME.match(name):
        raise TlkitError(
            f"plugin name {name!r} must start with a lowercase letter and use only a-z, 0-9 and _ "
            f"(it becomes the {kind}'s name and part of the module name)"
        )
    dist = "tlkit-" + name.replace("_", "-")
    module = "tlkit_" + name
    target = Path(directory) / dist
    if target.exists():
        raise TlkitError(f"{target} already exists; choose another name or --dir (nothing was changed)")
    files = {
        "pyproject.toml": _pyproject(kind, dist, module, name),
        "README.md": _readme(kind, name, dist, module),
        f"{module}/__init__.py": _MODULES[kind](name),
        f"tests/test_{module}.py": _test(kind, name, module),
    }
    for relative, text in files.items():
        write_text(target / relative, text)
    return target
