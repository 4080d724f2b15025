"""The one exception type tlkit raises for problems a user can fix."""

from __future__ import annotations


class TlkitError(Exception):
    """A user-facing error: its message is one line saying what is wrong and what to do.

    The CLI prints it without a traceback and exits non-zero; ``--debug``
    shows the traceback.
    """

    exit_code = 1


def first_line(message: BaseException | str, limit: int = 300) -> str:
    """The first line of an error's (or a text's) message — the exception's type name when it has
    none — cut to ``limit`` characters with "…": converters and runtimes often raise whole pages."""
    lines = str(message).strip().splitlines()
    line = lines[0] if lines else (type(message).__name__ if isinstance(message, BaseException) else "")
    return line if len(line) <= limit else line[: limit - 1] + "…"


def one_line(exc: BaseException, limit: int = 300) -> str:
    """``Type: first line of the message`` (``Type`` alone when it has none), at most ``limit`` characters."""
    text = (str(exc).strip().splitlines() or [""])[0]
    return first_line(f"{type(exc).__name__}: {text}" if text else type(exc).__name__, limit)


__all__ = ["TlkitError", "first_line", "one_line"]
