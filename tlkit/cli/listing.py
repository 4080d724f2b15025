"""``tlkit list-bases``, ``list-heads``, ``list-augmentations``, ``list-trackers``, ``plugins`` and ``info``.

None of these imports TensorFlow: specs are metadata, so listing answers at once.
"""

from __future__ import annotations

from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from tlkit.cli.common import handles_errors, out, print_json
from tlkit.errors import TlkitError
from tlkit.registry.params import BOUNDS, Rule
from tlkit.suggest import closest


def _params_text(params) -> str:
    return ", ".join(f"{p.name}={_fmt_value(p.default)}" for p in params) or "—"


def _fmt_value(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return ",".join(str(v) for v in value)
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int) and value >= 10_000:
        return f"{value:,}"
    return str(value)


def _param_line(p: dict[str, Any]) -> str:
    """``dropout = 0.5 (float, 0 ≤ x ≤ 0.99) dropout rate``: a parameter as ``tlkit info`` shows it."""
    kind = p["kind"]
    if p["choices"]:
        kind += ": " + ", ".join(str(choice) for choice in p["choices"])
    if p["bounds"]:
        kind += ", " + ("each " if kind.endswith("s") else "") + Rule(**p["bounds"]).range_text("x").removeprefix("x, ")
    return f"{p['name']} = {_fmt_value(p['default'])} ({kind}) {p['help']}"


def _base_row(spec) -> dict[str, Any]:
    from tlkit.weights import status  # lazy: tlkit.weights (hashlib, logging) adds ~10 ms to every `tlkit` start

    try:
        weights = status(spec)
        cached, where = weights.available, str(weights.path) if weights.path else None
    except TlkitError as exc:  # a plugin's locate_weights() failed: show it, keep listing
        cached, where = False, f"unknown ({exc})"
    return {
        "name": spec.name,
        "family": spec.family,
        "default_size": spec.default_size,
        "min_size": spec.min_size,
        "weights_sizes": list(spec.weights_sizes),
        "param_count": spec.param_count,
        "params": spec.param_count,  # the old key of param_count, kept for scripts (a head's params are its parameters)
        "preprocessing": spec.preprocessing,
        "feature_shape": spec.feature_shape,
        "explain_layer": spec.explain_layer or None,  # None: tlkit explain uses the base's output
        "weights_file": spec.weights_file,
        "weights_source": spec.weights_source or None,  # where the imagenet weights come from (a hub handle...)
        "other_weights": _other_weights(spec),  # None: --weights takes only imagenet, none or a file
        "imagenet_weights_cached": cached,
        "weights_path": where,
        "description": spec.description,
        "plugin": spec.plugin,
    }


def _other_weights(spec) -> str | None:
    """What ``--weights`` takes for ``spec`` besides imagenet, none and a file (folders, hub handles)."""
    kinds = (["a weights folder"] if spec.weight_folders else []) + [f"{s}://…" for s in spec.weight_schemes]
    return ", ".join(kinds) or None


def _choice_row(spec) -> dict[str, Any]:
    return {
        "name": spec.name,
        "description": spec.description,
        "plugin": spec.plugin,
        "params": [
            {
                "name": p.name,
                "kind": p.kind,
                "default": p.default,
                "help": p.help,
                "choices": list(p.choices),
                # the bounds that are set, named as in tlkit.Param and the training options (ge, gt, le, lt)
                "bounds": {name: getattr(p, name) for name in BOUNDS if getattr(p, name) is not None},
            }
            for p in spec.params
        ],
        # Augmentations only: True for batch mixing (mixup, cutmix), applied to training batches, not in the model.
        **({"mixes_batch": spec.mixes_batch} if hasattr(spec, "mixes_batch") else {}),
    }


@handles_errors
def list_bases(as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts.")) -> None:
    """List the base models (pretrained backbones) you can pass to --base."""
    from tlkit.registry.manager import list_specs  # lazy: ~2 ms that `tlkit --help` need not load

    rows = [_base_row(s) for s in list_specs("base")]
    if as_json:
        return print_json(rows)
    table = Table(title=f"{len(rows)} bases", title_justify="left")
    table.add_column("name", no_wrap=True)
    for column in ("size", "params", "preprocessing", "ImageNet weights", "plugin"):
        table.add_column(column, overflow="fold")
    for r in rows:
        table.add_row(
            r["name"],
            str(r["default_size"]),
            f"{r['param_count'] / 1e6:.1f}M",
            r["preprocessing"].split(":")[0],
            "local" if r["imagenet_weights_cached"] else "download",
            r["plugin"],
        )
    out.print(table)
    out.print(
        "Details: tlkit info NAME.  Weights marked 'download' are fetched on first use of "
        "--weights imagenet; offline see `tlkit weights --help`."
    )


def _list_choices(kind: str, title: str, as_json: bool) -> None:
    """The listing shared by heads and augmentations: name, parameters, description, plugin."""
    from tlkit.registry.manager import list_specs  # lazy: ~2 ms that `tlkit --help` need not load

    specs = list_specs(kind)
    if as_json:
        return print_json([_choice_row(s) for s in specs])
    table = Table(title=f"{len(specs)} {title}", title_justify="left")
    table.add_column("name", no_wrap=True)
    for column in ("parameters (defaults)", "description", "plugin"):
        table.add_column(column, overflow="fold")
    for s in specs:
        table.add_row(s.name, _params_text(s.params), s.description, s.plugin)
    out.print(table)


@handles_errors
def list_heads(as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts.")) -> None:
    """List the classification heads you can pass to --head (parameters via --head-param)."""
    _list_choices("head", "heads", as_json)


@handles_errors
def list_augmentations(as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts.")) -> None:
    """List the augmentations you can pass to --aug NAME[:key=value,...]."""
    _list_choices("augmentation", "augmentations (active only while training)", as_json)


def _tracker_row(spec) -> dict[str, Any]:
    return {
        "name": spec.name,
        "description": spec.description,
        "requires": spec.requires or None,
        "install": spec.install or spec.requires or None,
        "available": spec.available,  # its library is installed (checked without importing it)
        "plugin": spec.plugin,
    }


@handles_errors
def list_trackers(as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts.")) -> None:
    """List the experiment trackers you can pass to --track (train, tune; evaluate adds to their runs)."""
    from tlkit.registry.manager import list_specs  # lazy: ~2 ms that `tlkit --help` need not load

    rows = [_tracker_row(s) for s in list_specs("tracker")]
    if as_json:
        return print_json(rows)
    table = Table(title=f"{len(rows)} trackers", title_justify="left")
    table.add_column("name", no_wrap=True)
    for column in ("description", "installed", "plugin"):
        table.add_column(column, overflow="fold")
    for r in rows:
        installed = "yes" if r["available"] else f'no: pip install "{r["install"]}"'
        table.add_row(r["name"], escape(r["description"]), escape(installed), r["plugin"])
    out.print(table)
    out.print("Use: tlkit train ... --track NAME [--track-uri URI]; see docs/tracking.md.")


@handles_errors
def plugins(as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts.")) -> None:
    """List loaded plugins: version, hooks, what each registered, and load errors.

    TLKIT_PLUGINS=name1,name2 restricts which third-party plugins load (empty: built-ins only).
    """
    from tlkit.registry.manager import get_registry  # lazy: ~2 ms that `tlkit --help` need not load

    infos = get_registry().plugins
    if as_json:
        return print_json([p.as_dict() for p in infos])
    table = Table(title=f"{len(infos)} plugins", title_justify="left")
    for column in ("plugin", "distribution", "hooks", "registered", "status"):
        table.add_column(column, overflow="fold")
    for p in infos:
        status = "[red]" + "; ".join(p.errors).replace("[", "\\[") + "[/red]" if p.errors else "ok"
        table.add_row(
            p.name + (" (built-in)" if p.builtin else ""),
            f"{p.distribution} {p.version}",
            ", ".join(p.hooks) or "—",
            ", ".join(r.split(":", 1)[1] for r in p.registered) or "—",
            status,
        )
    out.print(table)


@handles_errors
def info(
    name: str = typer.Argument(..., help="A base, head, augmentation or tracker name."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts."),
) -> None:
    """Show everything about one base, head, augmentation or tracker."""
    from tlkit.registry.manager import get_registry  # lazy: ~2 ms that `tlkit --help` need not load

    registry = get_registry()
    found = registry.find(name)
    if not found:
        every = [n for specs in registry.specs.values() for n in specs]
        raise TlkitError(f"no base, head, augmentation or tracker is called {name!r}{closest(name, every)}")
    rows = [{"kind": kind, **_ROWS.get(kind, _choice_row)(spec)} for kind, spec in found]
    if as_json:
        return print_json(rows)
    for row in rows:
        table = Table(title=f"{row['kind']} {row['name']}", show_header=False, title_justify="left")
        table.add_column("field", style="bold")
        table.add_column("value", overflow="fold")
        for key, value in row.items():
            if key in ("kind", "name") or (key == "params" and row["kind"] == "base"):
                continue  # a base's "params" repeats its param_count
            if key == "weights_sizes" and not value:
                value = "any size"
            if key in ("weights_source", "other_weights") and not value:
                continue
            if key == "explain_layer" and not value:
                value = "the base's output"
            if key == "params" and isinstance(value, list):
                value = "\n".join(_param_line(p) for p in value) or "—"
            table.add_row(key, _fmt_value(value) if not isinstance(value, str) else escape(value))
        out.print(table)


_ROWS = {"base": _base_row, "tracker": _tracker_row}


def register(app: typer.Typer) -> None:
    """Add the listing commands to ``app``."""
    app.command("list-bases", epilog="Example: tlkit list-bases --json")(list_bases)
    app.command("list-heads", epilog="Example: tlkit list-heads --json")(list_heads)
    app.command("list-augmentations", epilog="Example: tlkit list-augmentations --json")(list_augmentations)
    app.command("list-trackers", epilog="Example: tlkit list-trackers --json")(list_trackers)
    app.command(
        "plugins", epilog="Example: tlkit plugins --json   (and TLKIT_PLUGINS= tlkit plugins for built-ins only)"
    )(plugins)
    app.command("info", epilog="Example: tlkit info mobilenet_v2")(info)
