"""``tlkit weights ...``: see which ImageNet weights are local, download them, carry them offline.

A Typer sub-app that :func:`register` adds to the main app as ``tlkit weights``.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from tlkit.cli.common import err, handles_errors, out, print_json

weights_app = typer.Typer(
    name="weights",
    help="ImageNet weight files: see which bases have them locally, download them, "
    "and carry them to an offline machine as a bundle.",
    epilog="Example: tlkit weights download resnet50 mobilenet_v2 --to bundle/   "
    "(then, offline: tlkit weights import bundle/)",
    no_args_is_help=True,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _mb(n: int | None) -> str:
    return "—" if n is None else f"{n / 1e6:.1f} MB"


def _progress(console, transient: bool = True):
    # lazy: rich.progress adds ~3 ms to every `tlkit` start; only a download shows a bar
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=transient,
        disable=not console.is_terminal,
    )


# -- list --------------------------------------------------------------------


@weights_app.command("list", epilog="Example: tlkit weights list --json")
@handles_errors
def list_weights(as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts.")) -> None:
    """Show which bases have their ImageNet weights on this machine, where, and how big."""
    # lazy: tlkit.weights (hashlib, logging) adds ~10 ms to every `tlkit` start
    from tlkit.weights import keras_cache_dir
    from tlkit.weights import list_weights as rows_of

    rows = rows_of()
    cache = keras_cache_dir()
    have = sum(r.available for r in rows)
    summary = f"{have} of {len(rows)} bases have ImageNet weights locally (cache: {cache})"
    if as_json:
        return print_json(
            {"cache": str(cache), "available": have, "total": len(rows), "bases": [r.as_dict() for r in rows]}
        )
    table = Table(title="ImageNet weights", title_justify="left")
    table.add_column("base", no_wrap=True)
    table.add_column("plugin", overflow="fold")
    table.add_column("weights file", overflow="fold", min_width=24)
    table.add_column("local", no_wrap=True)
    table.add_column("where", overflow="fold", max_width=40)
    for r in rows:
        where = "—"
        if r.available and r.path:
            where = "cache" if r.path.parent == cache else str(r.path.parent)
        table.add_row(
            r.base,
            r.plugin,
            r.file or "—",
            f"[green]yes[/green] {_mb(r.bytes)}" if r.available else "no",
            f"[red]{escape(r.error)}[/red]" if r.error else where,
        )
    out.print(table)
    out.print(summary)
    if have < len(rows):
        out.print(
            "Get missing ones with: tlkit weights download BASE... (needs internet), "
            "or tlkit weights import BUNDLE (a folder made by tlkit weights download --to)."
        )


# -- download ----------------------------------------------------------------


@weights_app.command(
    "download",
    epilog="Example: tlkit weights download resnet50 mobilenet_v2 --to weights-bundle/",
)
@handles_errors
def download(
    bases: list[str] = typer.Argument(..., help="Base names (tlkit weights list)."),
    to: Path | None = typer.Option(
        None,
        "--to",
        help="Also write a bundle here: the weight files plus tlkit-weights.json "
        "(merged into an existing bundle), for `tlkit weights import` on an offline machine.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts (progress goes to stderr)."),
) -> None:
    """Get the bases' ImageNet weights into Keras's cache (downloading what is missing), optionally bundled.

    Weights already on this machine need no network; with --to they are only copied.
    """
    from tlkit import weights  # lazy: tlkit.weights (hashlib, logging) adds ~10 ms to every `tlkit` start
    from tlkit.weights import keras_cache_dir

    specs = weights.resolve_bases(bases)
    results: list[dict[str, Any]] = []
    for spec in specs:
        found = weights.locate(spec)
        state = "already local"
        if found is None:
            err.print(f"Downloading ImageNet weights for {spec.name} ({spec.weights_file or '?'}) …")
            # Keras prints its download progress on stdout; keep stdout for the JSON.
            quiet = contextlib.redirect_stdout(sys.stderr) if as_json else contextlib.nullcontext()
            with quiet:
                found = weights.fetch(spec)
            state = "downloaded"
        results.append(
            {
                "base": spec.name,
                "plugin": spec.plugin,
                "file": found.name,
                "path": str(found),
                "bytes": found.stat().st_size,
                "status": state,
            }
        )

    bundle: dict[str, Any] | None = None
    if to is not None:
        total = sum(r["bytes"] for r in results)
        with _progress(err) as progress:
            task = progress.add_task(f"bundling 0/{len(specs)}", total=total)
            count = {"n": 0}

            def on_file(name: str) -> None:
                count["n"] += 1
                progress.update(task, description=f"bundling {count['n']}/{len(specs)} {name}")

            entries = weights.write_bundle(
                [(spec, Path(r["path"])) for spec, r in zip(specs, results)],
                to,
                on_progress=lambda n: progress.advance(task, n),
                on_file=on_file,
            )
        bundle = {
            "dir": str(to),
            "manifest": str(to / weights.MANIFEST_NAME),
            "files": [e.as_dict() for e in entries],
            "bytes": weights.bundle_bytes(entries),
        }

    if as_json:
        return print_json({"cache": str(keras_cache_dir()), "bases": results, "bundle": bundle})
    for r in results:
        out.print(f"{r['base']}: {r['status']}  {r['path']}  ({_mb(r['bytes'])})")
    if bundle is not None:
        out.print(f"Bundle {to}: {len(bundle['files'])} file(s), {_mb(bundle['bytes'])}, manifest {bundle['manifest']}")
        out.print(f"On the offline machine: tlkit weights import {to}")


# -- import ------------------------------------------------------------------


@weights_app.command("import", epilog="Example: tlkit weights import weights-bundle/")
@handles_errors
def import_bundle(
    directory: Path = typer.Argument(..., help="A bundle folder made by `tlkit weights download --to`."),
    force: bool = typer.Option(False, "--force", help="Replace cached files whose content differs from the bundle's."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts (progress goes to stderr)."),
) -> None:
    """Install a weights bundle into Keras's cache, after checking every file's SHA-256 and size."""
    from tlkit import weights  # lazy: tlkit.weights (hashlib, logging) adds ~10 ms to every `tlkit` start
    from tlkit.weights import keras_cache_dir

    _manifest, entries = weights.read_manifest(directory)
    total = weights.bundle_bytes(entries)
    with _progress(err) as progress:
        task = progress.add_task("verifying", total=total)

        def verified() -> None:
            progress.update(task, description="installing", completed=0)

        results = weights.import_bundle(
            directory,
            force=force,
            on_progress=lambda n: progress.advance(task, n),
            on_verified=verified,
        )
    cache = keras_cache_dir()
    if as_json:
        return print_json({"cache": str(cache), "files": [r.as_dict() for r in results]})
    table = Table(title=f"Bundle {directory} → {cache}", title_justify="left")
    for column in ("base", "file", "size", "status"):
        table.add_column(column, overflow="fold")
    for r in results:
        color = {"installed": "green", "replaced": "yellow"}.get(r.status)
        table.add_row(r.base, r.file, _mb(r.bytes), f"[{color}]{r.status}[/{color}]" if color else r.status)
    out.print(table)
    counts = {
        status: sum(r.status == status for r in results) for status in ("installed", "replaced", "already installed")
    }
    out.print(", ".join(f"{n} {status}" for status, n in counts.items() if n) + ". Check with: tlkit weights list")


def register(app: typer.Typer) -> None:
    """Add the ``weights`` command group to ``app``."""
    app.add_typer(weights_app, name="weights")
