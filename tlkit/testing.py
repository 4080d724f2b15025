"""Test helpers and pytest fixtures for plugin authors (and tlkit's own tests).

Installed with tlkit and registered as a pytest plugin (``pytest11`` entry
point), so in any project with tlkit installed these fixtures just work::

    def test_my_head_trains(tlkit_image_folder, tlkit_plugin):
        import my_plugin
        tlkit_plugin(my_plugin)                      # as if pip-installed
        data = tlkit_image_folder(classes=("a", "b"))
        result = tlkit.train(data=str(data), head="my_head", base="mobilenet_v2",
                             weights="none", image_size=32, epochs=1, verbose=False,
                             output=str(data.parent / "runs"))
        assert result.metrics["epochs_run"] == 1

Importing this module never imports TensorFlow.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Iterable
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tlkit.data.decode import load_image
from tlkit.registry import manager as _registry

__all__ = [
    "calibrated_mobilenet_v2_weights",
    "make_image_folder",
    "registry_with",
    "tlkit_image_folder",
    "tlkit_plugin",
    "write_images",
]

_COLORS = [(220, 40, 40), (40, 200, 60), (50, 70, 220), (230, 200, 40), (160, 60, 200), (40, 200, 200)]


def make_image_folder(
    root: str | Path,
    classes: Iterable[str] = ("cat", "dog"),
    *,
    per_class: int = 6,
    val_per_class: int = 2,
    size: int = 32,
    seed: int = 0,
) -> Path:
    """Write a tiny, learnable dataset: ``root/train/<class>/*.png`` and ``root/val/<class>/*.png``.

    Each class is a distinct colour plus noise, so a head learns it in an
    epoch or two.  ``val_per_class=0`` writes no ``val/`` folder.
    """

    root = Path(root)
    rng = np.random.default_rng(seed)
    for index, name in enumerate(classes):
        color = np.array(_COLORS[index % len(_COLORS)]) * (1 - 0.3 * (index // len(_COLORS)))
        for split, count in (("train", per_class), ("val", val_per_class)):
            if count == 0:
                continue
            write_images(root / split / name, count, color, size=size, noise=25, prefix=name, rng=rng)
    return root


def write_images(
    folder: str | Path,
    n: int,
    color: Iterable[float],
    *,
    size: int = 24,
    seed: int = 0,
    noise: int = 30,
    prefix: str = "img",
    rng: np.random.Generator | None = None,
) -> None:
    """Write ``n`` PNGs ``folder/<prefix>_000.png``... of ``color`` plus uniform noise in ±``noise``.

    Images of one colour are alike but not identical, so a class of them is
    learnable; ``rng`` (else a generator seeded with ``seed``) makes them reproducible.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = rng if rng is not None else np.random.default_rng(seed)
    base = np.asarray(list(color), dtype=np.float64)
    for i in range(n):
        pixels = np.clip(base + rng.integers(-noise, noise, size=(size, size, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{prefix}_{i:03d}.png")


class _ModuleEntryPoint:
    """An entry point that 'loads' an already-imported module (for tests without pip install)."""

    def __init__(self, module: types.ModuleType, name: str, distribution: str, version: str) -> None:
        self.name = name
        self.value = module.__name__
        self.group = _registry.ENTRY_POINT_GROUP
        self._module = module
        self.dist = types.SimpleNamespace(name=distribution, version=version)

    def load(self) -> types.ModuleType:
        return self._module


def calibrated_mobilenet_v2_weights(train_dir: str | Path, size: int, path: str | Path) -> Path:
    """Write random MobileNetV2 weights whose BatchNorm statistics fit the images under ``train_dir``.

    With ``weights=None`` a MobileNetV2's features shrink to ~1e-13 (its BatchNorm statistics
    are the initial 0/1), so every image gets the same prediction; calibrated on the data,
    the random base gives features that differ per image.  Pass ``path`` as ``weights=``.
    """
    import keras  # lazy: Keras imports TensorFlow; only this fixture builds a model

    keras.utils.set_random_seed(0)
    base = keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(size, size, 3))
    pixels = np.stack([load_image(f, size) for f in sorted(Path(train_dir).rglob("*.png"))]).astype("float32")
    for layer in base.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.0  # one training-mode call sets the moving statistics to this batch's
    base(pixels / 127.5 - 1.0, training=True)
    base.save_weights(str(path))
    return Path(path)


def registry_with(*modules: types.ModuleType, builtins: bool = True) -> _registry.Registry:
    """A Registry with tlkit's built-ins (optionally) plus ``modules`` as third-party plugins.

    Each module is registered as if it were installed, under its own name.
    """
    entry_points: list = []
    if builtins:
        entry_points += [
            ep for ep in metadata.distribution("tlkit").entry_points if ep.group == _registry.ENTRY_POINT_GROUP
        ]
    for module in modules:
        short = module.__name__.rsplit(".", 1)[-1]
        entry_points.append(_ModuleEntryPoint(module, short, f"{short} (test)", "0"))
    return _registry.Registry(entry_points=entry_points, env={})


@pytest.fixture
def tlkit_image_folder(tmp_path: Path) -> Callable[..., Path]:
    """Factory fixture: ``tlkit_image_folder(classes=..., per_class=..., size=...)`` → data folder."""
    counter = iter(range(1_000_000))

    def make(classes: Iterable[str] = ("cat", "dog"), **options) -> Path:
        return make_image_folder(tmp_path / f"data{next(counter)}", classes, **options)

    return make


@pytest.fixture
def tlkit_plugin(monkeypatch: pytest.MonkeyPatch) -> Callable[..., _registry.Registry]:
    """Fixture: ``tlkit_plugin(module, ...)`` makes tlkit (API and in-process CLI) see the modules as plugins.

    The process-wide registry is restored after the test.
    """

    def install(*modules: types.ModuleType, builtins: bool = True) -> _registry.Registry:
        registry = registry_with(*modules, builtins=builtins)
        monkeypatch.setattr(_registry, "_REGISTRY", registry)
        return registry

    return install
