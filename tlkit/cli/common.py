"""What every ``tlkit`` command shares: the consoles, JSON output and error handling.

Every command module of :mod:`tlkit.cli` imports it at the top.
"""

from __future__ import annotations

import functools
import json
import sys
import traceback
from collections.abc import Callable
from typing import Any

import typer
from rich.console import Console

from tlkit.errors import TlkitError, first_line
from tlkit.rich_observer import make_console

_state = {"debug": False}
out = make_console()  # never wraps lines in a pipe or a log file (COLUMNS decides there)
err = make_console(stderr=True)


def progress_console(*, quiet: bool, as_json: bool) -> Console:
    """Where a long command draws its progress: stderr, silenced by ``--quiet``; a console of its
    own under ``--json`` or ``--quiet``, so stdout carries only the result."""
    return make_console(stderr=True, quiet=quiet) if (as_json or quiet) else err


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
            raise typer.Exit(130) from None
        except OSError as exc:
            # A path the system refused (not a folder, no permission, disk full, read-only): the
            # user's to fix, so name the path and the reason rather than asking for a bug report.
            if _state["debug"]:
                traceback.print_exc()
            fail(_os_error_line(exc).replace("[", "\\["))
        except Exception as exc:  # an unexpected bug: still no raw traceback by default
            if _state["debug"]:
                traceback.print_exc()
            fail(
                f"unexpected {type(exc).__name__}: {first_line(str(exc))} "
                "(rerun with --debug for the traceback, and please report it)".replace("[", "\\[")
            )

    return wrapper


def _os_error_line(exc: OSError) -> str:
    """``cannot use PATH: REASON; ...`` for an OSError, in one line."""
    where = exc.filename if exc.filename is not None else None
    reason = exc.strerror or str(exc) or type(exc).__name__
    target = f" {where}" if where is not None else ""
    also = f" (-> {exc.filename2})" if getattr(exc, "filename2", None) else ""
    return (
        f"cannot use{target}{also}: {reason}; check that the path is right, that you may write "
        f"there and that the disk has room"
    )


def print_json(data: Any) -> None:
    """Machine-readable output on stdout (never wrapped or coloured)."""
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
