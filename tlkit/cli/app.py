"""The ``tlkit`` command: the root Typer app and its command modules.

Each module of :mod:`tlkit.cli` owns one group of commands and adds them with
``register(app)``; this module only creates the app, its global options and
the console-script entry point.  Nothing here imports TensorFlow.
"""

from __future__ import annotations

import os

import typer

from tlkit.cli import (
    audit,
    cache,
    evaluate,
    explain,
    export,
    listing,
    lr_find,
    new_plugin,
    serve,
    train,
    tune,
    weights,
)
from tlkit.cli.common import _state, out
from tlkit.version import __version__

app = typer.Typer(
    name="tlkit",
    help="Transfer learning for image classification: pick a pretrained base and a head, "
    "point at a folder of images, get a trained, evaluated classifier.",
    epilog="Example: tlkit train --data data --base resnet50 --head dense256 --epochs 10",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version_callback(value: bool) -> None:
    if value:
        out.print(f"tlkit {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Show the version and exit."
    ),
) -> None:
    _state["debug"] = debug


# The order here is the order of `tlkit --help`.
for _module in (listing, audit, train, lr_find, tune, evaluate, explain, export, serve, weights, cache, new_plugin):
    _module.register(app)


def main() -> None:
    """Console-script entry point."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    app()
