"""``tlkit tune``: search hyperparameters (and bases) with Optuna on cached features, print the best
configuration's ``tlkit train`` command.

It takes the options of ``tlkit train`` (generated from :class:`tlkit.config.options.TrainConfig`,
like train's own) except train's ``--output``: here ``--output`` is where the study's folder goes.
The work is :func:`tlkit.tune` (:mod:`tlkit.tuning`), imported only when the command runs.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from tlkit.cli.common import handles_errors, out, print_json, progress_console
from tlkit.cli.train import config_overrides, with_some_config_options
from tlkit.config.options import TrainConfig, config_from_mapping
from tlkit.errors import TlkitError
from tlkit.io.toml import read_toml

PANEL = "Search"
DEFAULT_OUTPUT = "tune"
DEFAULT_TRIALS = 20
_NOT_TUNED = ("output",)  # TrainConfig fields without a flag here: --output is the study's own
_NUMBER = r"\d+(?:\.\d+)?"
_DURATION = re.compile(rf"(?:(?P<h>{_NUMBER})h)?(?:(?P<m>{_NUMBER})m)?(?:(?P<s>{_NUMBER})s)?")


def parse_duration(text: str) -> float:
    """Seconds in ``90``, ``90s``, ``10m``, ``1h30m``, ``2h``, ``1.5h``; a one-line TlkitError otherwise."""
    given = text.strip().lower()
    match = _DURATION.fullmatch(given)
    if re.fullmatch(_NUMBER, given):
        seconds = float(given)
    elif match is not None and any(match.groups()):
        seconds = float(match["h"] or 0) * 3600 + float(match["m"] or 0) * 60 + float(match["s"] or 0)
    else:
        raise TlkitError(f"--timeout takes a duration such as 90, 90s, 10m or 1h30m, got {text!r}")
    if seconds <= 0:
        raise TlkitError(f"--timeout must be more than 0 seconds, got {text!r}")
    return int(seconds) if seconds == int(seconds) else seconds


def _search_strings(table: Mapping[str, Any], prefix: str = "") -> list[str]:
    """A TOML ``[search]`` table as ``name=spec`` strings: a string as written, a list comma-joined,
    a sub-table's keys joined with dots (``[search.head]`` ``dropout`` → ``head.dropout``)."""
    found = []
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            found += _search_strings(value, f"{name}.")
        elif isinstance(value, list) and value and all(isinstance(v, (str, int, float)) for v in value):
            found.append(f"{name}=" + ",".join(_choice_text(v) for v in value))
        elif isinstance(value, str):
            found.append(f"{name}={value}")
        else:
            raise TlkitError(
                f'[search] {name} must be a string such as "1e-4..1e-2:log" or a list of choices, got {value!r}'
            )
    return found


def _choice_text(value: str | int | float) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)


def read_tune_config(path: Path) -> tuple[TrainConfig, list[str]]:
    """A ``--config`` file: train's options, and its optional ``[search]`` table as search strings."""
    if not Path(path).is_file():
        raise TlkitError(f"config file {str(path)!r} does not exist")
    values = read_toml(path)
    values.pop("tlkit", None)  # the provenance table tlkit writes (best.toml, a run's config)
    search = values.pop("search", None) or {}
    if not isinstance(search, Mapping):
        raise TlkitError(f"search in {path} must be a table ([search]), got {search!r}")
    return config_from_mapping(values, source=str(path)), _search_strings(search)


def _merge_search(from_file: list[str], flags: list[str]) -> list[str]:
    """The file's entries, each replaced by a ``--search`` of the same name; new flags after them."""
    merged = {entry.split("=", 1)[0].strip(): entry for entry in from_file}
    for entry in flags:
        merged[entry.split("=", 1)[0].strip()] = entry
    return list(merged.values())


@with_some_config_options(without=_NOT_TUNED)
@handles_errors
def tune(
    *,
    config: Path | None = typer.Option(
        None,
        "--config",
        help="TOML file with any of train's options (flags override it) and an optional \\[search] table, "
        'one entry per searched option: lr = "1e-4..1e-2:log", head = ["dense256", "mlp"], '
        '"head.dropout" = "0..0.6" (a --search of the same name replaces the entry).',
        rich_help_panel=PANEL,
    ),
    search: list[str] | None = typer.Option(
        None,
        "--search",
        help="Search NAME=SPEC (repeatable): a range LOW..HIGH (:log for a log scale; integers for an "
        "integer option), or choices A,B,C; e.g. lr=1e-4..1e-2:log, head=dense256,mlp,linear, "
        "head.dropout=0..0.6, weight_decay=0..1e-2, class_weight=none,balanced, base=mobilenet_v2,resnet50.",
        rich_help_panel=PANEL,
    ),
    trials: int = typer.Option(
        DEFAULT_TRIALS,
        "--trials",
        help="Finished (complete or pruned) trials the study stops at, in all: a resumed study and every process "
        "sharing its storage count towards it.",
        rich_help_panel=PANEL,
    ),
    timeout: str | None = typer.Option(
        None,
        "--timeout",
        help="Stop starting trials after this long: 90, 90s, 10m, 1h30m (the running trial finishes).",
        rich_help_panel=PANEL,
    ),
    study: str | None = typer.Option(
        None,
        "--study",
        help="Study name (default: BASE-HEAD; the folder is <timestamp>-<study>); with --storage, every process giving the same name shares one study.",
        rich_help_panel=PANEL,
    ),
    storage: str | None = typer.Option(
        None,
        "--storage",
        help="Any Optuna storage: a PostgreSQL/MySQL URL, sqlite:///FILE, or journal:PATH (a journal file on a "
        "shared filesystem); default: an SQLite file in the study folder.",
        rich_help_panel=PANEL,
    ),
    resume: Path | None = typer.Option(
        None,
        "--resume",
        help="Continue the study in STUDY_DIR (a folder tlkit tune wrote) with its own options and search space, up "
        "to --trials finished trials; its finished trials are kept.",
        rich_help_panel=PANEL,
    ),
    pruner: str = typer.Option(
        "median",
        "--pruner",
        help="Stop unpromising trials early on the per-epoch hold-out value. One of: median, hyperband, none.",
        rich_help_panel=PANEL,
    ),
    train_best: bool = typer.Option(
        False,
        "--train-best",
        help="After the search, train the best configuration as a normal run directory (with --fine-tune-epochs "
        "if given).",
        rich_help_panel=PANEL,
    ),
    output: Path = typer.Option(
        Path(DEFAULT_OUTPUT),
        "--output",
        help="Where the study's folder (<timestamp>-<study>/: trials.csv, best.toml, plots, report) is created.",
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
    """Search hyperparameters and bases with Optuna: each trial trains a head on the cached features and is scored on a hold-out carved from train; the best configuration is then scored once on val next to the default recipe, written as best.toml, and its `tlkit train` command printed."""
    # --trials and --pruner are checked by the engine (tlkit.tuning.study.check_tune_options), before any work.
    seconds = parse_duration(timeout) if timeout is not None else None
    base_config, from_file = read_tune_config(config) if config else (None, [])
    space = _merge_search(from_file, list(search or []))
    overrides = config_overrides(options, base_config, without=_NOT_TUNED)
    overrides = {key: value for key, value in overrides.items() if value is not None}  # only what was given

    from tlkit import api  # lazy: tlkit.api (and the engine, Optuna) load only to tune; `tlkit --help` stays light

    console = progress_console(quiet=quiet, as_json=as_json)
    result = api.tune(
        base_config,
        search=space or None,
        trials=trials,
        timeout=seconds,
        study=study,
        storage=storage,
        resume=resume,
        output=output,
        pruner=pruner,
        train_best=train_best,
        console=console,
        verbose=not quiet,
        **overrides,
    )
    if as_json:
        return print_json(result.as_dict())
    if quiet:
        if result.train_command:
            sys.stdout.write(result.train_command + "\n")
        return
    print_summary(result)


def _accuracy(value: float | None) -> str:
    return "not scored" if value is None else f"{value:.4f}"


def print_summary(result: Any) -> None:
    """The best trial, its values, best vs default val accuracy, the files, then the train command."""
    counts = {state: sum(1 for t in result.trials if t.state == state) for state in ("complete", "pruned", "failed")}
    table = Table(title=f"Study {escape(result.study_name)}", show_header=False, title_justify="left")
    table.add_column("", style="bold", no_wrap=True)
    table.add_column("", overflow="fold")
    table.add_row("trials", f"{counts['complete']} complete, {counts['pruned']} pruned, {counts['failed']} failed")
    if result.objective:
        table.add_row("objective", escape(result.objective))
    if result.best is not None:
        table.add_row("best hold-out", f"{result.best.value:.4f}  (trial {result.best.number})")
        params = "\n".join(
            f"{escape(name)} = {value:.4g}" if isinstance(value, float) else f"{escape(name)} = {escape(str(value))}"
            for name, value in result.best.params.items()
        )
        table.add_row("best values", params or "—")
    else:
        table.add_row("best hold-out", "no trial completed")
    if result.best_val_accuracy is not None or result.default_val_accuracy is not None:
        line = f"best {_accuracy(result.best_val_accuracy)} vs default recipe {_accuracy(result.default_val_accuracy)}"
        if result.best_val_accuracy is not None and result.default_val_accuracy is not None:
            line += f"  ({(result.best_val_accuracy - result.default_val_accuracy) * 100:+.1f} points)"
        table.add_row("val accuracy", line + "\n[dim]scored once on val, after tuning[/dim]")
    if result.folder is not None:
        table.add_row("folder", escape(str(result.folder)))
    for key, label in (
        ("report", "report"),
        ("best_toml", "best config"),
        ("trials_csv", "trials table"),
        ("history_plot", "history plot"),
        ("importance_plot", "importance plot"),
    ):
        if key in result.files:
            table.add_row(label, escape(str(result.files[key])))
    best_run = getattr(result, "best_run", None)  # --train-best: the run directory it made
    if best_run is not None:
        table.add_row("best run", escape(str(best_run)))
    out.print(table)
    for note in result.notes:
        out.print(f"Note: {note}", markup=False, highlight=False)
    if result.train_command:
        out.print("Train the best configuration:")
        out.print(result.train_command, markup=False, highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add ``tune`` to ``app``."""
    app.command(
        "tune",
        epilog="Example: tlkit tune --data data --base mobilenet_v2 --weights imagenet --search lr=1e-4..1e-2:log "
        "--search head=dense256,mlp,linear --search head.dropout=0..0.6 --trials 20",
    )(tune)
