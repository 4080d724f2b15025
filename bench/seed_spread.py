"""How much does a training recipe's result depend on the seed?

Trains the same configuration once per seed (in this process, through the Python
API ``tlkit.train``), then reads each run back: best and final validation
accuracy, the first epoch's training loss, how many epochs sat at chance level,
and the fraction of *dead* ReLU units in the head's hidden layer (units that
output 0 for every training image in the saved, best-epoch model: the collapse the
classic dense256 recipe can show on un-normalised features).

    .venv/bin/python bench/seed_spread.py                              # the demo (classic recipe), seeds 0-4
    .venv/bin/python bench/seed_spread.py --head-param norm=batch      # dense256 with BatchNorm on the features
    .venv/bin/python bench/seed_spread.py --seeds 0-9 --set lr=3e-4 --label lr3e-4

The first run computes and caches the base's features (the demo: ~10 s); the
others reuse them, so each seed is a head-only run.  Runs are written under
``--out`` (default ``/tmp/seeds/<label>``); a JSON summary goes next to them.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import numpy as np

HIDDEN_LAYER = "head_dense"  # dense256's hidden Dense (its output is after the ReLU)


def parse_seeds(text: str) -> list[int]:
    """``"0-4"`` → [0, 1, 2, 3, 4]; ``"0,3,7"`` → [0, 3, 7]."""
    seeds: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.strip().partition("-")
        seeds.extend(range(int(lo), int(hi) + 1) if hi else [int(lo)])
    return seeds


def parse_pairs(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            sys.exit(f"expected KEY=VALUE, got {pair!r}")
        out[key.strip()] = value.strip()
    return out


def toml_value(text: str) -> Any:
    """``3e-4`` → 3e-4, ``true`` → True, ``cosine`` → "cosine" (TOML's rules, bare words as strings)."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def read_history(run_dir: Path) -> list[dict[str, str]]:
    from tlkit.io.rundir import RunDir

    with open(RunDir(run_dir).history_path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def dead_unit_fraction(run_dir: Path, data: Path, image_size: int, limit: int = 400) -> float | None:
    """Fraction of the hidden layer's units that are 0 for every training image (None: no such layer)."""
    import keras

    from tlkit.data.decode import load_image
    from tlkit.data.folders import scan_dataset
    from tlkit.inference.prediction import load_keras_model
    from tlkit.io.rundir import RunDir

    model = load_keras_model(RunDir(run_dir).model_path)
    # tlkit nests the head as one functional layer after the base: features → head.
    position = next((i for i, layer in enumerate(model.layers) if _has_layer(layer, HIDDEN_LAYER)), None)
    if position is None:
        return None
    head = model.layers[position]
    files = scan_dataset(data).train.files[:limit]
    activations = []
    for start in range(0, len(files), 50):
        x = np.stack([load_image(path, image_size) for path in files[start : start + 50]]).astype("float32")
        # The model is a chain (input → preprocessing → base → head), and so is the head up to its hidden layer.
        for layer in [*model.layers[1:position], *head.layers[1:]]:
            x = layer(x, training=False)
            if layer.name == HIDDEN_LAYER:
                break
        activations.append(keras.ops.convert_to_numpy(x))
    activations = np.concatenate(activations)
    return float(np.mean(np.all(activations <= 0, axis=0)))


def _has_layer(layer: Any, name: str) -> bool:
    try:
        layer.get_layer(name)
    except (AttributeError, ValueError):
        return False
    return True


def measure(seed: int, options: dict[str, Any], out: Path) -> dict[str, Any]:
    import tlkit
    from tlkit.config.options import load_config_file
    from tlkit.io.rundir import RunDir

    config = load_config_file(options.pop("config"))
    started = time.perf_counter()
    result = tlkit.train(config, verbose=False, seed=seed, output=str(out), **options)
    seconds = time.perf_counter() - started
    ran = load_config_file(RunDir(result.run_dir).config_path)  # the options as the run resolved them
    history = read_history(result.run_dir)
    val_acc = [float(row["val_accuracy"]) for row in history]
    chance = 1.0 / max(2, len(json.loads(RunDir(result.run_dir).classes_path.read_text())))
    return {
        "seed": seed,
        "run_dir": str(result.run_dir),
        "best_val_accuracy": max(val_acc),
        "final_val_accuracy": val_acc[-1],
        "best_epoch": int(np.argmax(val_acc)) + 1,
        "first_epoch_loss": float(history[0]["loss"]),
        "epochs_at_chance": sum(1 for acc in val_acc if acc <= chance + 0.02),
        "val_accuracy_per_epoch": val_acc,
        "dead_units": dead_unit_fraction(Path(result.run_dir), Path(config.data), ran.image_size),
        "seconds": round(seconds, 1),
    }


def summarise(rows: list[dict[str, Any]]) -> dict[str, float]:
    best = [row["best_val_accuracy"] for row in rows]
    final = [row["final_val_accuracy"] for row in rows]
    return {
        "best_mean": float(np.mean(best)),
        "best_min": min(best),
        "best_max": max(best),
        "best_spread": max(best) - min(best),
        "final_mean": float(np.mean(final)),
        "final_spread": max(final) - min(final),
    }


def print_table(label: str, rows: list[dict[str, Any]], summary: dict[str, float]) -> None:
    print(f"\n{label}")
    print("seed  best val acc  final val acc  best epoch  epoch-1 loss  epochs at chance  dead ReLUs")
    for row in rows:
        dead = "—" if row["dead_units"] is None else f"{row['dead_units']:.0%}"
        print(
            f"{row['seed']:>4}  {row['best_val_accuracy']:>12.3f}  {row['final_val_accuracy']:>13.3f}"
            f"  {row['best_epoch']:>10}  {row['first_epoch_loss']:>12.3g}  {row['epochs_at_chance']:>16}  {dead:>10}"
        )
    print(
        f"best: mean {summary['best_mean']:.3f}, min {summary['best_min']:.3f}, max {summary['best_max']:.3f},"
        f" spread {summary['best_spread'] * 100:.1f} points; final: mean {summary['final_mean']:.3f},"
        f" spread {summary['final_spread'] * 100:.1f} points"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="examples/configs/demo.toml", help="TOML config to train (the demo)")
    parser.add_argument("--seeds", default="0-4", help="seeds: 0-4 or 0,3,7")
    parser.add_argument("--head-param", action="append", default=[], metavar="K=V", help="a head parameter")
    parser.add_argument("--set", action="append", default=[], metavar="K=V", help="another option (e.g. lr=3e-4)")
    parser.add_argument("--label", default=None, help="name of this arm (default: from the parameters)")
    parser.add_argument("--out", default=None, help="where the runs go (default /tmp/seeds/<label>)")
    args = parser.parse_args(argv)

    from tlkit.config.options import load_config_file

    head_params = parse_pairs(args.head_param)
    base_config = load_config_file(args.config)
    extra = parse_pairs(args.set)
    overrides = {key: toml_value(value) for key, value in extra.items()}
    label = args.label or "-".join([*(f"{k}={v}" for k, v in {**head_params, **extra}.items())] or ["default"])
    out = Path(args.out or f"/tmp/seeds/{label}")
    out.mkdir(parents=True, exist_ok=True)

    rows = []
    for seed in parse_seeds(args.seeds):
        options: dict[str, Any] = {"config": args.config, **overrides}
        if head_params:
            options["head_params"] = {**base_config.head_params, **head_params}
        rows.append(measure(seed, options, out))
        row = rows[-1]
        print(f"seed {seed}: best {row['best_val_accuracy']:.3f}, final {row['final_val_accuracy']:.3f}", flush=True)
    summary = summarise(rows)
    print_table(label, rows, summary)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (out / f"seed-spread-{stamp}.json").write_text(
        json.dumps(
            {
                "label": label,
                "config": args.config,
                "head_params": head_params,
                "set": extra,
                "summary": summary,
                "runs": rows,
            },
            indent=2,
            default=_json_default,
        ),
        encoding="utf-8",
    )
    return 0


def _json_default(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    return str(value)


if __name__ == "__main__":
    sys.exit(main())
