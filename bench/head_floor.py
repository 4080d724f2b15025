"""Head-step micro-benchmark: seconds per epoch of training a head on cached features.

The same features (N × 7×7×C float32, random: speed does not depend on the values),
the same head (tlkit's ``dense256``) and Adam, batch 32, measured side by side:

- ``keras_fit_numpy``  plain Keras: ``model.fit`` on in-memory numpy arrays, Keras's Adam
- ``tlkit_generator``  tlkit before issue 10: a Python generator over the feature memmap
                       (``tf.data.Dataset.from_generator``) into ``fit``, Keras's Adam, accuracy + F1
- ``tlkit``            tlkit now: :func:`tlkit.features.dataset.make_feature_dataset` (native ``tf.data``)
                       and the optimizer ``tlkit.training.objectives`` makes (fused), accuracy + F1
- ``raw_fused_step``   the floor: a ``tf.function`` over the whole epoch, ``tf.gather`` of each batch,
                       ``GradientTape``, one ``ResourceApplyAdam`` per variable, no metrics

Run:  .venv/bin/python bench/head_floor.py [--images 1000] [--channels 1280] [--epochs 3]
Each arm trains ``--epochs`` timed epochs after one warm-up epoch (tracing, allocation).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def head_model(shape, classes: int):
    import keras

    from tlkit.config.resolve import resolve_head

    spec, params = resolve_head("dense256", {})
    inputs = keras.Input(shape=shape, name="features")
    return keras.Model(inputs, spec.build(inputs, classes, **params), name="head")


def timed_epochs(run_epoch, epochs: int) -> list[float]:
    run_epoch()  # warm-up: tracing and first allocations
    times = []
    for _ in range(epochs):
        started = time.perf_counter()
        run_epoch()
        times.append(time.perf_counter() - started)
    return times


def keras_fit_numpy(x, y, classes, batch, epochs):
    import keras

    keras.utils.set_random_seed(0)
    model = head_model(x.shape[1:], classes)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy", metrics=["accuracy"])
    onehot = np.eye(classes, dtype="float32")[y]
    return timed_epochs(lambda: model.fit(x, onehot, batch_size=batch, epochs=1, verbose=0), epochs)


def _tlkit_compile(model, classes, steps, optimizer_name: str = "adam"):
    from tlkit.config.options import TrainConfig
    from tlkit.training.objectives import compile_for_stage

    config = TrainConfig(optimizer=optimizer_name)
    compile_for_stage(model, config, lr=1e-3, steps_per_epoch=steps, epochs=10, warmup_epochs=0, num_classes=classes)


def tlkit_generator(x, y, classes, batch, epochs, memmap_path: Path):
    """The pre-issue-10 pipeline, reproduced here: a Python generator per batch over the memmap."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    features = np.memmap(memmap_path, dtype=np.float32, mode="r", shape=x.shape)
    count, passes = len(y), itertools.count()

    def batches():
        order = np.random.default_rng(next(passes)).permutation(count)
        for start in range(0, count, batch):
            index = order[start : start + batch]
            yield np.asarray(features[index]), y[index]

    dataset = tf.data.Dataset.from_generator(
        batches, output_signature=(tf.TensorSpec((None, *x.shape[1:]), tf.float32), tf.TensorSpec((None,), tf.int32))
    )
    dataset = dataset.map(lambda a, b: (a, tf.one_hot(b, classes)))
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(-(-count // batch))).prefetch(2)
    model = head_model(x.shape[1:], classes)
    compile_plain = keras.optimizers.Adam(1e-3)
    from tlkit.config.options import TrainConfig
    from tlkit.training.objectives import make_loss, make_metrics

    model.compile(optimizer=compile_plain, loss=make_loss(TrainConfig()), metrics=make_metrics(TrainConfig(), classes))
    return timed_epochs(lambda: model.fit(dataset, epochs=1, verbose=0), epochs)


def tlkit(x, y, classes, batch, epochs, memmap_path: Path):
    import keras

    from tlkit.features.dataset import make_feature_dataset
    from tlkit.features.store import FeatureSet

    keras.utils.set_random_seed(0)
    features = np.memmap(memmap_path, dtype=np.float32, mode="r", shape=(1, *x.shape))
    feature_set = FeatureSet(features, y, key="bench", path=memmap_path.parent, hit=True, seconds=0.0)
    dataset = make_feature_dataset(feature_set, batch_size=batch, num_classes=classes, shuffle=True, seed=0)
    model = head_model(x.shape[1:], classes)
    _tlkit_compile(model, classes, steps=-(-len(y) // batch))
    return timed_epochs(lambda: model.fit(dataset, epochs=1, verbose=0), epochs)


def raw_fused_step(x, y, classes, batch, epochs):
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    model = head_model(x.shape[1:], classes)
    features = tf.constant(x)
    labels = tf.one_hot(tf.constant(y), classes)
    variables = model.trainable_variables
    slots = [(tf.Variable(tf.zeros_like(v)), tf.Variable(tf.zeros_like(v))) for v in variables]
    step_count = tf.Variable(0.0)
    loss_fn = keras.losses.CategoricalCrossentropy()
    count = len(y)

    @tf.function
    def epoch(order):
        for start in tf.range(0, count, batch):
            index = order[start : start + batch]
            xb, yb = tf.gather(features, index), tf.gather(labels, index)
            with tf.GradientTape() as tape:
                loss = loss_fn(yb, model(xb, training=True))
            grads = tape.gradient(loss, variables)
            step_count.assign_add(1.0)
            for var, grad, (m, v) in zip(variables, grads, slots):
                tf.raw_ops.ResourceApplyAdam(
                    var=var.handle,
                    m=m.handle,
                    v=v.handle,
                    beta1_power=tf.pow(0.9, step_count),
                    beta2_power=tf.pow(0.999, step_count),
                    lr=1e-3,
                    beta1=0.9,
                    beta2=0.999,
                    epsilon=1e-7,
                    grad=grad,
                )

    passes = itertools.count()
    return timed_epochs(lambda: epoch(tf.constant(np.random.default_rng(next(passes)).permutation(count))), epochs)


ARMS = ("keras_fit_numpy", "tlkit_generator", "tlkit", "raw_fused_step")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument(
        "--channels", type=int, default=1280, help="feature channels (1280: MobileNetV2, 2048: ResNet50)"
    )
    parser.add_argument("--grid", type=int, default=7)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--arms", default=",".join(ARMS))
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    from tlkit.io.tfenv import import_tensorflow

    import_tensorflow()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.images, args.grid, args.grid, args.channels), dtype=np.float32)
    y = rng.integers(0, args.classes, args.images).astype(np.int32)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        memmap_path = Path(tmp) / "table.float32"
        x.tofile(memmap_path)
        for arm in args.arms.split(","):
            fn = globals()[arm]
            extra = (memmap_path,) if arm in ("tlkit_generator", "tlkit") else ()
            times = fn(x, y, args.classes, args.batch, args.epochs, *extra)
            results[arm] = {"epoch_s": round(float(np.median(times)), 3), "all": [round(t, 3) for t in times]}
            print(f"{arm:18s} {results[arm]['epoch_s']:7.2f} s/epoch  {results[arm]['all']}", flush=True)
    floor = results.get("raw_fused_step", {}).get("epoch_s")
    if floor:
        print("\nratio to the raw fused step (the floor):")
        for arm, r in results.items():
            print(f"  {arm:18s} {r['epoch_s'] / floor:5.2f}×")
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)}, "results": results}, indent=2))


if __name__ == "__main__":
    main()
