"""``tlkit audit``: wrong labels, duplicates, train/val leaks, outliers and unreadable images, from the
same feature pass (and feature store) as ``tlkit train``; the work is :func:`tlkit.audit`.

Its data and model options are train's own (generated from :class:`tlkit.config.options.TrainConfig`),
so the audit sees the data, the split and the features a training run with them would.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from tlkit.auditing.options import AUDIT_OPTIONS, DEFAULT_OUTPUT
from tlkit.cli.common import handles_errors, out, print_json, progress_console
from tlkit.cli.train import config_value, with_some_config_options
from tlkit.config.options import OPTIONS

PANEL = "Audit"


@with_some_config_options(only=AUDIT_OPTIONS)
@handles_errors
def audit(
    *,
    folds: int = typer.Option(
        5, "--folds", help="Out-of-fold heads that score every label (K-fold).", rich_help_panel=PANEL
    ),
    output: Path = typer.Option(
        Path(DEFAULT_OUTPUT),
        "--output",
        help="Where the audit's folder (<timestamp>-<base>/) is created; never inside the data folder.",
        rich_help_panel=PANEL,
    ),
    relabel: bool = typer.Option(
        False,
        "--relabel",
        help="Apply suggested labels scoring at least --relabel-threshold in cleaned.csv.",
        rich_help_panel=PANEL,
    ),
    relabel_threshold: float | None = typer.Option(
        None,
        "--relabel-threshold",
        help="Score (1 - out-of-fold probability of the given label) from which --relabel applies a suggestion (default 0.8).",
        rich_help_panel=PANEL,
    ),
    near_threshold: float | None = typer.Option(
        None,
        "--near-threshold",
        help="Cosine similarity of embeddings from which two images are near-duplicate candidates (default: see docs/audit.md).",
        rich_help_panel=PANEL,
    ),
    quiet: bool = typer.Option(
        False, "--quiet", "-q", help="No progress output; print only the folder.", rich_help_panel=PANEL
    ),
    as_json: bool = typer.Option(
        False, "--json", help="Print audit.json's object on stdout (progress goes to stderr).", rich_help_panel=PANEL
    ),
    **options: Any,
) -> None:
    """Audit a data set before training: unreadable images, exact and near duplicates, train/val leaks, likely label errors and outliers, from one pass of the frozen base (shared with tlkit train through the feature cache). Never changes the data folder."""
    from tlkit import api  # lazy: the audit loads TensorFlow, cleanlab and scikit-learn; --help must not

    given = {name: config_value(OPTIONS[name], options.get(name)) for name in AUDIT_OPTIONS}
    console = progress_console(quiet=quiet, as_json=as_json)
    own: dict[str, Any] = {"relabel_threshold": relabel_threshold} if relabel_threshold is not None else {}
    result = api.audit(
        output=output,
        folds=folds,
        relabel=relabel,
        near_threshold=near_threshold,
        **own,
        console=console,
        verbose=not quiet,
        **{k: v for k, v in given.items() if v is not None},
    )
    if as_json:
        return print_json(result.as_json())
    if quiet:
        sys.stdout.write(f"{result.folder}\n")
        return
    print_summary(result)


def train_command(result: Any) -> str:
    """The ``tlkit train`` command on the audit's cleaned labels (same base, size and weights)."""
    from tlkit.auditing.outputs import CLEANED_CSV  # lazy: the audit's modules load only after an audit

    args = ["tlkit", "train", "--data", str(result.data), "--labels", str(result.folder / CLEANED_CSV)]
    args += ["--base", result.base, "--image-size", str(result.image_size), "--weights", result.weights]
    return shlex.join(args)


def print_summary(result: Any) -> None:
    """A table of what was found (the worst of each kind), the files, then the train command."""
    table = Table(title=f"Audit of {escape(str(result.data))}", title_justify="left")
    table.add_column("finding", style="bold", no_wrap=True)
    table.add_column("count", justify="right")
    table.add_column("worst", overflow="fold")
    rows: list[tuple[str, int, str]] = [
        (
            "unreadable",
            len(result.unreadable),
            result.unreadable[0].path + f" ({result.unreadable[0].reason})" if result.unreadable else "",
        ),
        (
            "train/val leaks",
            len(result.leaks),
            f"{result.leaks[0].val} = {result.leaks[0].train}" if result.leaks else "",
        ),
        (
            "duplicate groups",
            len(result.duplicates),
            ", ".join(result.duplicates[0].paths[:3]) if result.duplicates else "",
        ),
        (
            "  across classes",
            len(result.conflicts),
            ", ".join(result.conflicts[0].paths[:3]) if result.conflicts else "",
        ),
        (
            "label issues",
            len(result.label_issues),
            f"{result.label_issues[0].path}: {result.label_issues[0].given} → {result.label_issues[0].suggested} "
            f"({result.label_issues[0].score:.2f})"
            if result.label_issues
            else "",
        ),
        (
            "near duplicates",
            len(result.near_duplicates),
            ", ".join(result.near_duplicates[0].paths[:3]) if result.near_duplicates else "",
        ),
        (
            "outliers",
            len(result.outliers),
            f"{result.outliers[0].path} ({result.outliers[0].score:.2f})" if result.outliers else "",
        ),
    ]
    for name, count, worst in rows:
        table.add_row(name, str(count), escape(worst))
    out.print(table)
    counts = "; ".join(
        f"{split}: " + ", ".join(f"{escape(c)} {n}" for c, n in per_class.items())
        for split, per_class in result.class_counts.items()
    )
    out.print(f"Classes — {counts}")
    if result.folder is not None:
        from tlkit.auditing.outputs import AUDIT_JSON, CLEANED_CSV, ISSUES_CSV, REPORT_HTML  # lazy: see train_command

        out.print(f"Report: {escape(str(result.folder / REPORT_HTML))}")
        out.print(f"Findings: {escape(str(result.folder / AUDIT_JSON))}, {escape(str(result.folder / ISSUES_CSV))}")
        cleaned = result.cleaned
        if cleaned:
            dropped = cleaned["dropped_leaks"] + cleaned["dropped_duplicates"] + cleaned["dropped_conflicts"]
            out.print(
                f"{CLEANED_CSV} keeps {cleaned['kept']} of {cleaned['total']} images (drops {cleaned['dropped_leaks']} "
                f"train copies of val images, {cleaned['dropped_duplicates']} duplicates, {cleaned['dropped_conflicts']} "
                f"copies with conflicting labels: {dropped} in all) and relabels {cleaned['relabelled']}"
            )
        out.print("Train on the cleaned labels:")
        out.print(train_command(result), markup=False, highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add ``audit`` to ``app``."""
    app.command(
        "audit",
        epilog="Example: tlkit audit --data data --base mobilenet_v2 --weights imagenet",
    )(audit)
