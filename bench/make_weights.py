"""Create the frozen base's weight file both benchmark arms load (no ImageNet download needed).

``keras.applications.<Base>(include_top=False, weights=None, input_shape=(S, S, 3))``
is built after ``keras.utils.set_random_seed(seed)`` and saved with
``save_weights`` — so the plain Keras script and tlkit get byte-identical
frozen bases.

``--init random`` stops there.  ``--init bn-calibrated`` (the benchmark's
default) then sets every BatchNormalization layer's moving mean and variance,
in order, to the statistics of its input on a fixed calibration batch drawn
from the Fashion-MNIST *test* split (disjoint from the benchmark's images).
Why: with Keras' random initialisation the signal vanishes through
MobileNetV2 (its features come out around 1e-11, so any head stays at chance
and the accuracy comparison means nothing); calibrated, every block passes on
unit-scale activations, a usable stand-in for a pretrained base.  Weights
(kernels, gamma, beta) stay exactly the seeded random ones.

Usage::

    python bench/make_weights.py --base resnet50 --out bench/.data/resnet50.weights.h5
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

BASES = {"mobilenet_v2": ("MobileNetV2", "mobilenet_v2"), "resnet50": ("ResNet50", "resnet50")}
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


def calibration_pixels(count: int, size: int, seed: int):
    """``count`` class-balanced Fashion-MNIST *test* images as float32 (count, size, size, 3), 0–255."""
    import numpy as np
    from PIL import Image

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from make_data import demo  # the IDX reader of examples/make_demo_data.py

    images = demo.read_idx(FASHION_MNIST / "t10k-images-idx3-ubyte.gz", magic=0x00000803)
    labels = demo.read_idx(FASHION_MNIST / "t10k-labels-idx1-ubyte.gz", magic=0x00000801)
    rng = np.random.default_rng(seed)
    per_class = -(-count // 10)
    chosen = np.concatenate([rng.choice(np.flatnonzero(labels == c), per_class, replace=False) for c in range(10)])[
        :count
    ]
    return np.stack(
        [
            np.asarray(
                Image.fromarray(images[i]).convert("RGB").resize((size, size), Image.Resampling.BILINEAR),
                dtype=np.float32,
            )
            for i in chosen
        ]
    )


def calibrate_batchnorm(model, x) -> int:
    """Set each BatchNormalization's moving statistics to those of its input on ``x``, in order."""
    import keras
    import numpy as np

    done = 0
    for layer in model.layers:
        if not isinstance(layer, keras.layers.BatchNormalization):
            continue
        probe = keras.Model(model.inputs, layer.input)
        h = np.asarray(probe(x, training=False), dtype=np.float64)
        axes = tuple(range(h.ndim - 1))
        layer.moving_mean.assign(h.mean(axis=axes).astype("float32"))
        layer.moving_variance.assign(h.var(axis=axes).astype("float32"))
        done += 1
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", choices=sorted(BASES), required=True)
    parser.add_argument("--out", type=Path, required=True, help="a .weights.h5 path")
    parser.add_argument("--init", choices=("random", "bn-calibrated"), default="bn-calibrated")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--calibration-images", type=int, default=32)
    args = parser.parse_args(argv)

    import keras
    import numpy as np

    started = time.perf_counter()
    keras.utils.set_random_seed(args.seed)
    constructor, module = BASES[args.base]
    size = args.image_size
    model = getattr(keras.applications, constructor)(include_top=False, weights=None, input_shape=(size, size, 3))
    info = {"base": args.base, "init": args.init, "seed": args.seed, "image_size": size}
    if args.init == "bn-calibrated":
        x = getattr(keras.applications, module).preprocess_input(
            calibration_pixels(args.calibration_images, size, args.seed)
        )
        info["calibrated_batchnorm_layers"] = calibrate_batchnorm(model, x)
        info["calibration_images"] = args.calibration_images
        sample = x[:8]
    else:
        sample = getattr(keras.applications, module).preprocess_input(
            np.random.default_rng(args.seed).uniform(0, 255, (8, size, size, 3)).astype("float32")
        )
    features = np.asarray(model(sample, training=False)).reshape(len(sample), -1)
    info["feature_abs_mean"] = float(np.abs(features).mean())
    info["feature_std_across_images"] = float(features.std(axis=0).mean())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name.replace(".weights.h5", ".tmp.weights.h5"))
    model.save_weights(str(tmp))
    os.replace(tmp, args.out)
    info["seconds"] = round(time.perf_counter() - started, 1)
    args.out.with_suffix(".json").write_text(json.dumps(info, indent=2))
    print(json.dumps(info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
