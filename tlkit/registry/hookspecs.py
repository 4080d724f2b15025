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

    Registering a name that another plugin already registered is an error
    reported against both plugins; the first registration stays usable.
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
