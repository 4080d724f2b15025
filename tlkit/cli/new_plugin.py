"""``tlkit new-plugin``: scaffold a plugin package."""

from __future__ import annotations

from pathlib import Path

import typer

from tlkit.cli.common import handles_errors, out

# How to try each kind once installed (NAME is the plugin's name).
_TRY = {
    "head": "tlkit train --data data --head {name}",
    "base": "tlkit train --data data --base {name}",
    "augmentation": "tlkit train --data data --aug {name}",
    "tracker": "tlkit train --data data --track {name}",
}


@handles_errors
def new_plugin(
    name: str = typer.Argument(
        ..., help="The plugin's name; it becomes the name of the head, base, augmentation or tracker it registers."
    ),
    kind: str = typer.Option("head", "--kind", help="What the plugin adds: head, base, augmentation or tracker."),
    directory: Path = typer.Option(Path("."), "--dir", help="Where to create tlkit-NAME/."),
) -> None:
    """Scaffold a working plugin package (pyproject with the entry point, a head, base, augmentation or tracker, passing tests)."""
    from tlkit.registry.scaffold import new_plugin as scaffold  # lazy: only this command needs it, not `tlkit --help`

    kind = kind.strip().lower()
    target = scaffold(name, directory, kind=kind)  # a bad kind: a one-line error naming the kinds
    out.print(f"Created {target}")
    out.print(f"  pip install -e {target}        # then: tlkit plugins, tlkit info {name}")
    out.print(f"  {_TRY[kind].format(name=name)}")
    out.print(f"  cd {target} && pytest          # its test uses tlkit's pytest fixtures")


def register(app: typer.Typer) -> None:
    """Add ``new-plugin`` to ``app``."""
    app.command(
        "new-plugin",
        epilog="Example: tlkit new-plugin mine --kind head && pip install -e tlkit-mine && tlkit train --head mine",
    )(new_plugin)
