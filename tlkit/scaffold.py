"""``tlkit new-plugin NAME``: scaffold a working plugin package.

The package registers one head called NAME through the ``tlkit`` entry-point
group and ships a passing test built on tlkit's pytest fixtures.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

from tlkit.errors import TlkitError
from tlkit.rundir import write_text

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,40}$")


def _pyproject(dist: str, module: str, name: str) -> str:
    return textwrap.dedent(f"""\
        [build-system]
        requires = ["setuptools>=61"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "{dist}"
        version = "0.1.0"
        description = "A tlkit plugin that adds the '{name}' head."
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
        """)


def _module(name: str) -> str:
    return textwrap.dedent(f'''\
        """tlkit plugin: the '{name}' head (global average pooling → Dense → Dropout → softmax)."""

        import tlkit


        @tlkit.hookimpl
        def register_heads(register):
            register(
                tlkit.HeadSpec(
                    name="{name}",
                    build=build_head,
                    description="GlobalAveragePooling → Dense(units, relu) → Dropout → softmax",
                    params=(
                        tlkit.Param("units", 128, "width of the hidden layer", min=1),
                        tlkit.Param("dropout", 0.2, "dropout rate", min=0.0, max=0.99),
                    ),
                )
            )


        def build_head(features, num_classes, *, units, dropout):
            """Keras functional code on the frozen base's feature map; returns the softmax output."""
            from keras import layers  # import Keras here, not at the top: listing stays fast

            x = layers.GlobalAveragePooling2D(name="{name}_pool")(features)
            x = layers.Dense(units, activation="relu", name="{name}_dense")(x)
            x = layers.Dropout(dropout, name="{name}_dropout")(x)
            return layers.Dense(num_classes, activation="softmax", name="{name}_predictions")(x)
        ''')


def _test(name: str, module: str) -> str:
    return textwrap.dedent(f'''\
        """Tests for the '{name}' head, using tlkit's pytest fixtures (tlkit_image_folder, tlkit_plugin)."""

        import tlkit

        import {module}


        def test_head_is_registered(tlkit_plugin):
            registry = tlkit_plugin({module})
            assert registry.heads["{name}"].description


        def test_trains_end_to_end(tlkit_plugin, tlkit_image_folder, tmp_path):
            tlkit_plugin({module})
            data = tlkit_image_folder(classes=("red", "green"), per_class=6, size=32)
            result = tlkit.train(
                data=str(data), base="mobilenet_v2", weights="none", image_size=32,
                head="{name}", head_params={{"units": 16}}, epochs=1, batch_size=4,
                output=str(tmp_path / "runs"), verbose=False,
            )
            assert result.metrics["epochs_run"] == 1
            assert (result.run_dir / "model.keras").exists()
        ''')


def _readme(name: str, dist: str) -> str:
    return textwrap.dedent(f"""\
        # {dist}

        A [tlkit](https://pypi.org/project/tlkit/) plugin that adds the `{name}` head.

        ```console
        pip install -e .
        tlkit plugins                 # shows {name} with its version and hooks
        tlkit info {name}
        tlkit train --data data --head {name} --head-param units=256
        pip install -e ".[test]" && pytest
        ```
        """)


def new_plugin(name: str, directory: str | Path = ".") -> Path:
    """Create ``directory/tlkit-<name>/`` with a working plugin package; return its path."""
    if not _NAME.match(name):
        raise TlkitError(
            f"plugin name {name!r} must start with a lowercase letter and use only a-z, 0-9 and _ "
            f"(it becomes the head's name and part of the module name)"
        )
    dist = "tlkit-" + name.replace("_", "-")
    module = "tlkit_" + name
    target = Path(directory) / dist
    if target.exists():
        raise TlkitError(f"{target} already exists; choose another name or --dir (nothing was changed)")
    files = {
        "pyproject.toml": _pyproject(dist, module, name),
        "README.md": _readme(name, dist),
        f"{module}/__init__.py": _module(name),
        f"tests/test_{module}.py": _test(name, module),
    }
    for relative, text in files.items():
        write_text(target / relative, text)
    return target
