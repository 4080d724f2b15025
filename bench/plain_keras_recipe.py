"""The classic transfer-learning recipe in plain Keras — the baseline tlkit is compared with.

Nothing from tlkit is imported.  This is the recipe as it is usually written:
``image_dataset_from_directory`` for train and val, a frozen ImageNet-style base
(``include_top=False``, 224 x 224 x 3) with the matching ``preprocess_input``,
the ``dense256`` head (Flatten → Dropout(0.5) → Dense(256, relu) → Dropout(0.5)
→ Dense(classes, softmax)), Adam(1e-3), categorical cross-entropy, accuracy and
``model.fit(train, validation_data=val, epochs=E)``.  The frozen base runs on
every image in every epoch.

The base is built with ``weights=None`` and then loads ``--weights`` (the same
file tlkit is given), so both sides of the benchmark use identical frozen bases.

Usage::

    python bench/plain_keras_recipe.py --data bench/.data/fmnist-1000 --base resnet50 \\
        --weights bench/.data/resnet50.weights.h5 --epochs 10 --json-out /tmp/plain.json

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
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="folder with train/ and val/")
    parser.add_argument("--base", choices=sorted(BASES), default="resnet50")
    parser.add_argument("--weights", type=Path, required=True, help="base weights (.weights.h5)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--json-out", type=Path, help="also write the result JSON here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(args.seed)
    size = (args.image_size, args.image_size)
    constructor, module_name = BASES[args.base]
    preprocess_input = getattr(keras.applications, module_name).preprocess_input

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

    # Base: include_top=False, random init, then the shared weight file; frozen.
    base = getattr(keras.applications, constructor)(include_top=False, weights=None, input_shape=(*size, 3))
    base.load_weights(str(args.weights))
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
