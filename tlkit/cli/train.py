"""``tlkit train``: parse the options, call :func:`tlkit.train`, render the result.

The training options are not written here: each field of
:class:`tlkit.config.options.TrainConfig` carries its flag, help and panel
(:class:`tlkit.config.options.Option`), and :func:`with_config_options` turns them into
the command's Typer options.  Adding a field to TrainConfig adds its flag.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from tlkit.cli.common import handles_errors, out, print_json, progress_console
from tlkit.config.options import OPTIONS, PANELS, Option, TrainConfig, load_config_file, to_toml
from tlkit.errors import TlkitError
from tlkit.io.rundir import RunDir
from tlkit.registry.specs import parse_assignments


def option_help(meta: Option) -> str:
    """The option's ``--help`` text: its help, then how to give it, its choices and its default."""
    parts = [meta.help]
    if meta.kind in (list, dict):
        sep = meta.separator
        how = "Repeatable" if not sep else "Comma-separated" if sep == "," else f"Separated by {sep!r}"
        parts.append(f"{how}, any of: {', '.join(meta.choices)}." if meta.choices else f"{how}.")
    elif meta.choices:
        parts.append(f"One of: {', '.join(meta.choices)}.")
    if meta.default_text():
        parts.append(f"(default: {meta.default_text()})")
    return " ".join(parts)


def _annotation(meta: Option) -> Any:
    """The type Typer parses the flag into; None means "not given, keep the config's"."""
    if meta.kind in (list, dict):
        return str | None if meta.separator else list[str] | None
    return Path | None if meta.path else meta.kind | None


def config_parameters() -> list[inspect.Parameter]:
    """One keyword-only parameter per TrainConfig field, with its ``typer.Option``, grouped by panel."""
    ordered = sorted(OPTIONS.values(), key=lambda meta: PANELS.index(meta.panel))  # stable: field order
    return [
        inspect.Parameter(
            meta.name,
            inspect.Parameter.KEYWORD_ONLY,
            annotation=_annotation(meta),
            default=typer.Option(None, meta.flags, help=option_help(meta), rich_help_panel=meta.panel),
        )
        for meta in ordered
    ]


def with_config_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Give ``command`` a Typer option for every TrainConfig field, passed to it in ``**options``.

    Typer reads a command's parameters from ``inspect.signature``, which honours
    ``__signature__``: the command's own keyword-only parameters are kept (after
    the generated ones, so the "Run" panel lists ``--output`` first) and its
    ``**options`` is replaced by one parameter per field.
    """
    own = [
        p
        for p in inspect.signature(command, eval_str=True).parameters.values()
        if p.kind is not inspect.Parameter.VAR_KEYWORD
    ]
    clash = {p.name for p in own} & set(OPTIONS)
    if clash:
        raise TypeError(f"{command.__name__}: parameters {sorted(clash)} are TrainConfig fields")
    params = config_parameters() + own
    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    # Typer also resolves annotations through typing.get_type_hints: keep both views equal.
    command.__annotations__ = {p.name: p.annotation for p in params}
    return command


def with_some_config_options(
    *, only: tuple[str, ...] | None = None, without: tuple[str, ...] = ()
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Like :func:`with_config_options`, for commands that take some of train's options (``only``
    these, or all ``without`` these): lr-find, tune and audit, whose ``--output`` is their own."""

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        own = [
            p
            for p in inspect.signature(command, eval_str=True).parameters.values()
            if p.kind is not inspect.Parameter.VAR_KEYWORD
        ]
        generated = [p for p in config_parameters() if (only is None or p.name in only) and p.name not in without]
        params = generated + own
        command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in params}
        return command

    return decorate


def config_value(meta: Option, value: Any) -> Any:
    """A parsed flag value as the configuration holds it (``None``: the flag was not given)."""
    if value is None:
        return None
    if meta.kind is list:
        if meta.separator:
            return [item.strip() for item in value.split(meta.separator) if item.strip()] if value else None
        return list(value) if value else None
    return str(value) if isinstance(value, Path) else value


def _head_params(given: list[str] | None, head: str | None, base_config: TrainConfig | None) -> dict | None:
    """What ``--head-param`` (and ``--head``) make of ``head_params``; ``None``: leave it alone.

    Given parameters update the ``--config`` file's parameters when the head
    stays the same; a different head starts from its own defaults, because
    the file's parameters belong to another head.
    """
    same_head = base_config is not None and (head is None or head == base_config.head)
    if given:
        params: dict[str, Any] = dict(base_config.head_params) if base_config and same_head else {}
        for text in given:
            params.update(parse_assignments(text, OPTIONS["head_params"].cli_flag))
        return params
    if base_config and not same_head:
        return {}
    return None


def config_overrides(
    options: dict[str, Any], base_config: TrainConfig | None, *, without: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Train's generated flags as configuration values (``None``: not given), ``head_params`` merged
    with the ``--config`` file's as :func:`_head_params` says; ``without`` names flags the command lacks."""
    overrides: dict[str, Any] = {
        name: config_value(meta, options.get(name))
        for name, meta in OPTIONS.items()
        if name != "head_params" and name not in without
    }
    head_params = _head_params(options.get("head_params"), overrides["head"], base_config)
    if head_params is not None:
        overrides["head_params"] = head_params
    return overrides


@with_config_options
@handles_errors
def train(
    *,
    config: Path | None = typer.Option(
        None,
        "--config",
        help="TOML file with any of these options (flags override it), e.g. a run's " + RunDir.CONFIG + ".",
        rich_help_panel="Run",
    ),
    resume: Path | None = typer.Option(
        None,
        "--resume",
        help="Continue an interrupted run from its last checkpoint (with its own config).",
        rich_help_panel="Run",
    ),
    print_config: bool = typer.Option(
        False, "--print-config", help="Print the resolved configuration as TOML and exit.", rich_help_panel="Run"
    ),
    quiet: bool = typer.Option(
        False, "--quiet", "-q", help="No progress output; print only the run directory.", rich_help_panel="Run"
    ),
    as_json: bool = typer.Option(
        False, "--json", help="Print the result as JSON on stdout (progress goes to stderr).", rich_help_panel="Run"
    ),
    **options: Any,
) -> None:
    """Train a classifier: frozen pretrained base + a new head (+ optional fine-tuning), on DATA/train, validated on DATA/val."""
    from tlkit import api  # lazy: tlkit.api loads numpy; `tlkit --help` stays without it

    base_config = load_config_file(config) if config else None
    overrides = config_overrides(options, base_config)
    console = progress_console(quiet=quiet, as_json=as_json)
    if resume is not None:
        given = [key for key, value in overrides.items() if value is not None]
        if given or config or print_config:
            raise TlkitError(
                f"--resume continues a run with its own {RunDir.CONFIG}; drop the other options "
                f"({', '.join(given) or '--config/--print-config'})"
            )
        result = api.train(console=console, verbose=not quiet, resume=resume)
    else:
        if print_config:
            out.print(to_toml(api.resolve_config(base_config, **overrides)), markup=False, end="")
            return
        result = api.train(base_config, console=console, verbose=not quiet, **overrides)
    if as_json:
        return print_json(result.as_dict())
    if quiet:
        sys.stdout.write(f"{result.run_dir}\n")
        return
    _print_summary(result)


def _print_summary(result) -> None:
    m = result.metrics
    table = Table(title="Training finished", show_header=False, title_justify="left")
    table.add_column("", style="bold", no_wrap=True)
    table.add_column("", overflow="fold")
    stage = " — fine-tuning stage" if m.get("best_stage") == "fine_tune" else ""
    table.add_row("saved model", f"epoch {m['best_epoch']} of {m['epochs_run']}, best by {m['monitor']}{stage}")
    for key, label in (
        ("best_val_accuracy", "val accuracy"),
        ("best_val_f1", "val F1 (macro)"),
        ("best_val_loss", "val loss"),
    ):
        if m.get(key) is not None:
            table.add_row(label, f"{m[key]:.4f}")
    if m.get("fine_tune_epochs"):
        table.add_row("stages", f"head {m['head_epochs']} epochs, fine-tuning {m['fine_tune_epochs']} epochs")
    if m.get("stopped_early"):
        table.add_row("early stopping", ", ".join(m["stopped_early"]))
    table.add_row("final train accuracy", f"{m['final'].get('accuracy', float('nan')):.4f}")
    table.add_row("training time", f"{m['train_time_s']:.1f} s")
    table.add_row("images", f"{m['num_train']} train / {m['num_val']} val, {m['num_classes']} classes")
    table.add_row("run directory", str(result.run_dir))
    for name, status in (m.get("trackers") or {}).items():  # --track: where the run went, or why not
        where = f"run {status['run_id']} at {status.get('uri', '?')}" if status.get("run_id") else "ok"
        shown = where if status.get("status") == "ok" else f"failed ({status.get('error', '')})"
        table.add_row(f"tracker {name}", escape(shown))
    table.add_row("model", str(result.model_path))
    table.add_row("plots", "\n".join(str(p) for p in result.plots))
    if result.report:
        table.add_row("report", str(result.report))
    out.print(table)


def register(app: typer.Typer) -> None:
    """Add ``train`` to ``app``."""
    app.command(
        "train",
        epilog="Example: tlkit train --data data --base mobilenet_v2 --head mlp --head-param units=512,256 "
        "--aug flip_horizontal --aug rotation:factor=0.1 --epochs 10 --weights imagenet",
    )(train)
