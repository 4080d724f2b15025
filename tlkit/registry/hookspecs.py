"""The pluggy hook specifications: the contract between tlkit and its plugins.

Every docstring here is the reference for plugin authors.  A plugin is a
Python module registered under the ``tlkit`` entry-point group::

    [project.entry-points.tlkit]
    my_plugin = "my_plugin"

and implements any of these hooks with ``@tlkit.hookimpl``.  Hooks are called
once per process, when the registry is first used.  A plugin module must not
import TensorFlow or Keras at import time (import them inside the ``build``
functions instead), so that listing plugins stays fast.
"""

from __future__ import annotations

from collections.abc import Callable

import pluggy

from tlkit.registry.specs import BaseSpec

hookspec = pluggy.HookspecMarker("tlkit")
hookimpl = pluggy.HookimplMarker("tlkit")


@hookspec
def register_bases(register: Callable) -> None:
    """Register pretrained base models (backbones).

    Call ``register(spec)`` once per base.  A ``keras.applications``-style
    model (a constructor taking ``include_top``, ``weights``, ``input_shape``)
    is one call::

        register(tlkit.keras_application_base(
            "nasnet_mobile", "NASNetMobile", preprocessing=tlkit.bases.TF,
            description="NASNet-Mobile, 74.0% ImageNet top-1", param_count=4_269_716,
            weights_file="nasnet_mobile_no_top.h5", feature_shape="7×7×1056 at 224 px"))

    with one of the standard preprocessings ``tlkit.bases.CAFFE``, ``TF``,
    ``TORCH`` or ``INTERNAL``.  Any other base is a ``tlkit.BaseSpec(...)``:

    - ``name``: what users type after ``--base`` (lowercase, unique across plugins).
    - ``build(input_shape, weights)``: returns a headless ``keras.Model``
      (no classifier, no pooling) taking a ``(h, w, 3)`` preprocessed image
      and returning its feature map.  ``weights`` is ``"imagenet"``, None, or
      the path of a weight file whose suffix is in ``weight_file_suffixes``;
      other weight files (``.weights.h5``/``.h5``) are loaded by tlkit after
      building with None.  When ImageNet weights cannot be had, raise
      ``tlkit.TlkitError`` with a message saying how to get them.
    - ``preprocess()``: returns a list of standard, serializable Keras layers
      mapping raw RGB pixels in 0–255 to the base's expected input (empty if
      the base preprocesses itself), e.g. ``tlkit.bases.TORCH.layers``.  No
      ``Lambda`` layers: the saved model must load with plain
      ``keras.saving.load_model``.
    - ``description``, ``family``, ``default_size``, ``min_size``,
      ``weights_sizes`` (sizes that have ImageNet weights; empty means any),
      ``param_count`` (the number of weights), ``preprocessing`` (a human description,
      e.g. ``tlkit.bases.TORCH.description``),
      ``weights_file`` (the ImageNet weight file name in Keras's cache),
      ``feature_shape`` (text such as ``"7×7×2048 at 224 px"``).
    - ``weight_file_suffixes``: suffixes (e.g. ``(".pth",)``) that ``build``
      reads itself; ``locate_weights()``: returns the local path of the
      ImageNet weights when they are available offline, else None (default:
      ``weights_file`` looked up in Keras's cache).
    - ``explain_layer``: the name of the layer inside the base whose feature
      map ``tlkit explain`` (Grad-CAM) explains; empty (default) means the
      base's output.  Set it when the base ends in something other than its
      last convolutional block, e.g. ``"block5_conv3"`` for VGG16, whose
      headless model ends in a max-pooling.
    - Weights that are not one file (a model hub's checkpoints):
      ``weight_folders=True`` lets ``--weights DIR`` through to ``build``
      (which reads the folder itself); ``weight_schemes`` (e.g.
      ``("kaggle", "hf")``) lets handles such as ``--weights hf://org/model``
      through; other bases refuse both in one line before any work.
      ``check_weights(weights)``, when given, is called with every
      ``--weights`` value but ``imagenet``/``none`` as the configuration is
      resolved (no TensorFlow: read a config file, not the model) and raises
      ``tlkit.TlkitError`` when they do not fit the base (e.g. a folder
      holding another architecture).  ``weights_source`` says where the
      ``imagenet`` weights come from (a hub handle, a URL); ``tlkit info``
      shows it.

    Registering a name that another plugin already registered is an error
    reported against both plugins; the first registration stays usable.
    """


@hookspec(firstresult=True)
def resolve_base(name: str) -> BaseSpec | None:
    """Make the base for a ``--base`` name that no plugin registered, or return None.

    For a *family* of names too large to register one by one, such as
    ``hub:<preset>`` for any checkpoint of a model hub.  tlkit asks each plugin
    implementing this hook, in turn, only when ``name`` is not registered
    (``--base``, ``tlkit info``, ``tlkit weights download``, a run's saved
    configuration); the first ``tlkit.BaseSpec`` returned is used, and kept for
    the rest of the process.  Return None for names that are not yours.

    The spec's ``name`` must be ``name`` exactly (it is written to the run's
    ``config.toml``, which resolves it again later).  Such names may hold
    characters such as ``:`` and ``/``; tlkit makes them safe where it uses a
    base's name in a file or layer name.  Like ``register_bases``, resolving a
    name must not import TensorFlow or Keras (``build`` does that).  Raise
    ``tlkit.TlkitError`` for a name of your family that is malformed; any other
    exception is reported as one line naming your plugin.  Dynamic bases are
    not listed by ``tlkit list-bases``: document the family (and register a few
    curated names with ``register_bases``).
    """


@hookspec
def register_heads(register: Callable) -> None:
    """Register classification heads.

    Call ``register(tlkit.HeadSpec(name, build, description))``.
    ``build(features, num_classes, *, <params>)`` receives the frozen base's
    output (a ``(batch, h, w, c)`` Keras tensor) and returns a softmax output
    tensor of shape ``(batch, num_classes)``, built with standard Keras layers.

    The keyword-only arguments of ``build`` are the parameters users set with
    ``--head-param name=value``, declared once, in the signature::

        def build(features, num_classes, *,
                  units: Annotated[int, tlkit.Param("hidden width", ge=1)] = 256,
                  pooling: Annotated[Literal["avg", "max"], "how to pool"] = "avg"):

    The default is the Python default; the type (``int``, ``float``, ``str``,
    ``bool``, ``Literal[...]``, ``tuple[int, ...]``, ``tuple[float, ...]``) and
    ``tlkit.Param(help, choices=, ge=, gt=, le=, lt=)`` (or a help string) say how
    tlkit parses and checks a value; ``x: int = tlkit.param(256, ge=1, help=...)``
    says the same in the default.  The bound names are those of the training
    options.  tlkit passes every parameter, resolved, as a keyword argument.
    (``HeadSpec(params=(tlkit.ParamSpec(...), ...))`` declares them explicitly instead.)
    """


@hookspec
def register_augmentations(register: Callable) -> None:
    """Register training-time image augmentations.

    Call ``register(tlkit.AugmentationSpec(name, build, description))``.
    ``build(seed, *, <params>)`` returns one Keras layer (typically a
    ``keras.layers.Random*`` preprocessing layer, or a ``keras.Sequential`` of
    them) that maps a float batch of 0–255 RGB pixels ``(batch, h, w, 3)`` to a
    batch of the same shape and dtype, and is the identity when called with
    ``training=False``.  Users select it with ``--aug name:key=value,...``;
    its parameters are the keyword-only arguments of ``build``, declared as
    for heads.

    A batch-mixing augmentation (mixup, cutmix: it mixes images *and labels*
    of a batch) registers with ``AugmentationSpec(..., mixes_batch=True)``;
    its ``build(seed, *, <params>)`` returns ``mix(images, labels, seed) ->
    (images, labels)`` instead of a layer: TensorFlow ops on a float32 batch
    of 0–255 pixels and its one-hot labels, with ``seed`` a shape-(2,) int64
    tensor for ``tf.random.stateless_*`` ops (new for every batch).  tlkit
    applies it to the training batches of end-to-end training only; it is
    never part of the saved model.
    """


@hookspec
def register_trackers(register: Callable) -> None:
    """Register experiment trackers: where ``--track NAME`` reports runs, studies and evaluations.

    Call ``register(tlkit.TrackerSpec(name, build, description, requires=..., install=...))``:

    - ``name``: what users type after ``--track`` (``track = [...]`` in TOML, ``track=[...]`` in
      ``tlkit.train``); ``tlkit list-trackers`` lists it.
    - ``build(*, uri, register_model, **options)``: returns a ``tlkit.Tracker``, one per run.
      ``uri`` is ``--track-uri`` and ``register_model`` is ``--register-model`` (``""`` when not
      given; accept ``**options`` for keywords added later).  Import your tracker's library
      here, not at the top of the module, so that listing stays fast.
    - ``requires``: the module ``build`` imports (e.g. ``"mlflow"``); ``install``: what to
      ``pip install`` when it is missing.  tlkit checks it (without importing it) before any
      work and refuses the run with ``--track NAME needs MODULE: pip install "INSTALL"``.

    A tracker subclasses ``tlkit.Tracker``, itself a ``tlkit.TrainingObserver``, and overrides
    what it records; every method does nothing by default.  For ``tlkit train --track NAME``::

        run_started(run)                 once the run directory exists (run.kind == "train")
        stage_started, epoch_ended, ...  every TrainingObserver event of the run
        model_saved(path, example)       model.keras written; example: float32 (n, size, size, 3)
        artifacts_written(paths, folder) config.toml, classes.json, history.csv, report.html,
                                         plots/*.png, then metrics.json
        run_ended(status, metrics)       "finished", "killed" (Ctrl-C, SIGTERM) or "failed"

    ``run`` (a ``tlkit.TrackedRun``) holds the run's ``name`` and ``path`` (the run directory),
    its resolved ``config`` (a dict, as in ``config.toml``), ``tags`` (``tlkit.base``,
    ``tlkit.head``, ``tlkit.version``, ``tlkit.data_fingerprint``, ...), ``resumed``, ``state``
    and ``say(text)`` (one info line for the user).  What ``run_started`` returns (a small
    JSON-serialisable dict such as ``{"run_id": ...}``) is kept in the run directory and comes
    back as ``run.state`` when ``--resume`` continues the run and when ``tlkit evaluate`` calls
    ``evaluation_finished(run, metrics, files)`` on it.  ``epoch_ended(stage, epoch,
    last_epoch, logs)`` numbers epochs globally across the head and fine-tuning stages.
    ``tlkit tune --track NAME`` calls ``run_started`` with ``run.kind == "study"``, then
    ``trial_finished(trial, best)`` once per trial, ``artifacts_written`` and ``run_ended``.

    Only the chief worker of a multi-worker run tracks.  A tracker never stops a run: whatever
    it raises is caught, the user sees one warning naming the tracker and the reason, the
    tracker is not called again during that run, and ``metrics.json`` records
    ``"trackers": {NAME: {"status": "failed", "error": ..., "during": ...}}`` (``"ok"`` otherwise).
    Keep remote calls quick to fail (short timeouts, few retries).
    """
