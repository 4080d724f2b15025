"""What every ``tlkit`` command shares: the consoles, JSON output and error handling.

Every command module of :mod:`tlkit.cli` imports it at the top.
"""

from __future__ import annotations

import functools
import json
import sys
import traceback
from typing import Any, Callable

import typer
from rich.console import Console

from tlkit.errors import TlkitError

_state = {"debug": False}
out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


def fail(message: str, code: int = 1) -> None:
    err.print(f"[bold red]Error:[/bold red] {message}", markup=True, highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def handles_errors(func: Callable) -> Callable:
    """Turn exceptions into one clear line and a non-zero exit (``--debug``: full traceback)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except TlkitError as exc:
            if _state["debug"]:
                traceback.print_exc()
            fail(str(exc).replace("[", "\\["), exc.exit_code)
        except KeyboardInterrupt:
            err.print("Interrupted.")
            raise typer.Exit(130)
        except Exception as exc:  # an unexpected bug: still no raw traceback by default
            if _state["debug"]:
                traceback.print_exc()
            fail(
                f"unexpected {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} "
                "(rerun with --debug for the traceback, and please report it)".replace("[", "\\[")
            )

    return wrapper


def print_json(data: Any) -> None:
    """Machine-readable output on stdout (never wrapped or coloured)."""
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
