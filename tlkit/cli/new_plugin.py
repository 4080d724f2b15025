"""``tlkit new-plugin``: scaffold a plugin package."""

from __future__ import annotations

from pathlib import Path

import typer

from tlkit.cli.common import handles_errors, out

@handles_errors
def new_plugin(
    name: str = typer.Argument(..., help="The plugin's name; it becomes the name of the head it registers."),
    directory: Path = typer.Option(Path("."), "--dir", help="Where to create tlkit-NAME/."),
) -> None:
    """Scaffold a working plugin package (pyproject with the entry point, a head, a passing test)."""
    from tlkit.scaffold import new_plugin as scaffold

    target = scaffold(name, directory)
    out.print(f"Created {target}")
    out.print(f"  pip install -e {target}        # then: tlkit plugins, tlkit info {name}")
    out.print(f"  tlkit train --data data --head {name}")
    out.print(f"  cd {target} && pytest          # its test uses tlkit's pytest fixtures")



def register(app: typer.Typer) -> None:
    """Add ``new-plugin`` to ``app``."""
    app.command("new-plugin", epilog="Example: tlkit new-plugin mine && pip install -e tlkit-mine && tlkit train --head mine")(new_plugin)
