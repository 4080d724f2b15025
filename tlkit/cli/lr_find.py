"""``tlkit lr-find``: sweep the head's learning rate on cached features, suggest one, print the train command.

It takes the options of ``tlkit train`` (generated from :class:`tlkit.config.options.TrainConfig`,
like train's own) except train's ``--output``: here ``--output`` is where the sweep's folder
goes.  The work is :func:`tlkit.lr_find` (:mod:`tlkit.training.lr_finder`).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from tlkit.cli.common import handles_errors, out, print_json, progress_console
from tlkit.cli.train import config_overrides, with_some_config_options
from tlkit.config.options import load_config_file
from tlkit.io.rundir import RunDir
from tlkit.training.lr_finder import DEFAULT_END_LR, DEFAULT_OUTPUT, DEFAULT_START_LR, MIN_STEPS, RULES

PANEL = "Learning-rate finder"
# TrainConfig fields without a flag here: --output is the sweep's own; a sweep is never tracked.
_NOT_SWEPT = ("output", "track", "track_uri", "register_model")


@with_some_config_options(without=_NOT_SWEPT)
@handles_errors
def lr_find(
    *,
    config: Path | None = typer.Option(
        None,
        "--config",
        help="TOML file with any of train's options (flags override it), e.g. a run's " + RunDir.CONFIG + ".",
        rich_help_panel=PANEL,
    ),
    start_lr: float = typer.Option(DEFAULT_START_LR, "--start-lr", help="First learning rate.", rich_help_panel=PANEL),
    end_lr: float = typer.Option(
        DEFAULT_END_LR,
        "--end-lr",
        help="Last learning rate (the sweep stops earlier if the loss diverges).",
        rich_help_panel=PANEL,
    ),
    steps: int | None = typer.Option(
        None,
        "--steps",
        help=f"Steps of the sweep (default: one pass over the train set, at least {MIN_STEPS}: a small "
        "train set is repeated).",
        rich_help_panel=PANEL,
    ),
    output: Path = typer.Option(
        Path(DEFAULT_OUTPUT),
        "--output",
        help="Where the sweep's folder (plot, curve as JSON and CSV) is created; never the data folder.",
        rich_help_panel=PANEL,
    ),
    quiet: bool = typer.Option(
        False, "--quiet", "-q", help="No progress output; print only the train command.", rich_help_panel=PANEL
    ),
    as_json: bool = typer.Option(
        False, "--json", help="Print the result as JSON on stdout (progress goes to stderr).", rich_help_panel=PANEL
    ),
    **options: Any,
) -> None:
    """Find a learning rate: train a fresh head on the cached features with the rate growing every step, plot loss vs rate, suggest one (steepest descent) and print the `tlkit train` command with it."""
    from tlkit import api  # lazy: tlkit.api loads numpy; `tlkit --help` stays without it

    base_config = load_config_file(config) if config else None
    overrides = config_overrides(options, base_config, without=_NOT_SWEPT)
    console = progress_console(quiet=quiet, as_json=as_json)
    result = api.lr_find(
        base_config,
        output=output,
        start_lr=start_lr,
        end_lr=end_lr,
        steps=steps,
        console=console,
        verbose=not quiet,
        **overrides,
    )
    if as_json:
        return print_json(result.as_dict())
    if quiet:
        sys.stdout.write(result.train_command + "\n")
        return
    print_summary(result)


def print_summary(result) -> None:
    """The suggestion, the sweep in brief, the files, then the train command on its own line."""
    table = Table(title="Learning-rate finder", show_header=False, title_justify="left")
    table.add_column("", style="bold", no_wrap=True)
    table.add_column("", overflow="fold")
    table.add_row("suggested --lr", f"{result.suggested_lr_text}  ({RULES[result.rule]})")
    if result.steepest_lr is not None and result.rule != "steepest":
        table.add_row("steepest descent", f"{result.steepest_lr:.2g}")
    table.add_row(
        "lowest loss ÷ 10", f"{result.minimum_lr / 10:.2g}  (lowest smoothed loss at {result.minimum_lr:.2g})"
    )
    table.add_row(
        "sweep",
        f"{len(result.lrs)} of {result.steps_planned} steps, {result.start_lr:g} → {result.lrs[-1]:.3g}; {result.stopped}",
    )
    table.add_row("plot", str(result.plot))
    table.add_row("curve", f"{result.curve_json}\n{result.curve_csv}")
    out.print(table)
    out.print("Train with it:")
    out.print(result.train_command, markup=False, highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add ``lr-find`` to ``app``."""
    app.command(
        "lr-find",
        epilog="Example: tlkit lr-find --data data --base mobilenet_v2 --head dense256 --weights imagenet",
    )(lr_find)
