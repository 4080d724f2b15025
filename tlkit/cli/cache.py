"""``tlkit cache info``, ``tlkit cache verify`` and ``tlkit cache clear``: the frozen-base feature cache."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from tlkit.cli.common import handles_errors, out, print_json
from tlkit.errors import TlkitError

cache_app = typer.Typer(help="Inspect, verify or clear the frozen-base feature cache.", no_args_is_help=True)


def _checked_store():
    """The feature store; a cache path that exists but is not a folder is the user's to fix, not to delete."""
    from tlkit.features.store import CACHE_ENV, FeatureStore  # lazy: numpy stays out of `tlkit --help`

    store = FeatureStore()
    if store.root.exists() and not store.root.is_dir():
        raise TlkitError(
            f"the feature cache {store.root} is a file, not a folder; move it away or set {CACHE_ENV} to a folder"
        )
    return store


@handles_errors
def cache_info(as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts.")) -> None:
    """Show the feature cache: where it is, each entry (base, size, images, views) and the total size."""
    from tlkit.features.engines import read_decision  # lazy: engines loads numpy; `tlkit --help` stays without it

    store = _checked_store()
    entries = store.entries()
    for e in entries:
        kept = read_decision(Path(e["path"])) if e["kind"] == "onnx" else None
        if kept:  # --engine auto's choice for this exported base, on this machine
            e.update(engine=kept["engine"], engine_reason=kept["reason"])
    total = sum(e["bytes"] for e in entries)
    if as_json:
        return print_json({"root": str(store.root), "bytes": total, "entries": entries})
    table = Table(title=f"Feature cache: {store.root} ({total / 1e6:.1f} MB)", title_justify="left")
    for column in ("kind", "base", "size", "images", "views", "engine", "MB", "entry"):
        table.add_column(column, overflow="fold")
    for e in entries:
        shape = e.get("shape") or [None, None]
        table.add_row(
            e["kind"],
            str(e.get("base", "")),
            str(e.get("image_size", "")),
            str(shape[1] if len(shape) > 1 and shape[1] is not None else ""),  # an exported base has no images
            str(shape[0] or ""),
            str(e.get("engine", "")),
            f"{e['bytes'] / 1e6:.1f}",
            e["name"],
        )
    out.print(table)
    out.print("Override the location with TLKIT_CACHE_DIR; free space with `tlkit cache clear`.")


@handles_errors
def cache_verify(
    remove: bool = typer.Option(False, "--remove", help="Delete the damaged entries (they are recomputed on demand)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts."),
) -> None:
    """Check every feature entry's whole SHA-256 (a run's hit checks only size, mtime and sampled chunks).

    Exits with 1 when an entry is damaged (and kept); damaged entries are never used either way.
    """
    store = _checked_store()
    names = [e["name"] for e in store.entries() if e["kind"] == "features"]
    damaged = [name for name in names if not store.verify(name)]
    if remove:
        for name in damaged:
            store.remove(name)
    if as_json:
        print_json({"root": str(store.root), "checked": len(names), "damaged": damaged, "removed": remove})
    else:
        out.print(f"Checked {len(names)} feature entries in {store.root}: {len(damaged)} damaged")
        for name in damaged:
            out.print(f"  damaged: {store.entry_path(name)}" + (" (removed)" if remove else ""))
        if damaged and not remove:
            out.print("Damaged entries are never used (a run recomputes them); delete them with --remove.")
    if damaged and not remove:
        raise typer.Exit(1)


@handles_errors
def cache_clear(as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts.")) -> None:
    """Delete every cached feature set and exported ONNX model (they are rebuilt on demand)."""
    store = _checked_store()
    entries, freed = store.clear()
    if as_json:
        return print_json({"root": str(store.root), "entries_removed": entries, "bytes_freed": freed})
    out.print(f"Removed {entries} cache entries ({freed / 1e6:.1f} MB) from {store.root}")


def register(app: typer.Typer) -> None:
    """Add the ``cache`` command group to ``app``."""
    cache_app.command("info", epilog="Example: tlkit cache info --json")(cache_info)
    cache_app.command("verify", epilog="Example: tlkit cache verify --remove")(cache_verify)
    cache_app.command("clear", epilog="Example: tlkit cache clear")(cache_clear)
    app.add_typer(cache_app, name="cache")
