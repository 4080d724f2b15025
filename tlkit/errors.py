"""The one exception type tlkit raises for problems a user can fix."""

from __future__ import annotations


class TlkitError(Exception):
    """A user-facing error: its message is one line saying what is wrong and what to do.

    The CLI prints it without a traceback and exits non-zero; ``--debug``
    shows the traceback.
    """

    exit_code = 1
