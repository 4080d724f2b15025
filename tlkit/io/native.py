"""Native libraries' chatter kept off the user's terminal.

TensorFlow, MLIR, absl, tf2onnx and ONNX Runtime write to the process's file
descriptor 2 (below Python's ``sys.stderr``) and through Python logging and
warnings.  One mechanism silences all three while a noisy call runs; the real
errors arrive as exceptions, which callers turn into one line.
``TLKIT_TF_LOGS=1`` shows everything.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator
from typing import IO

SHOW_LOGS_ENV = "TLKIT_TF_LOGS"


def logs_wanted() -> bool:
    """True when the user asked to see the native libraries' logs (``TLKIT_TF_LOGS=1``)."""
    return bool(os.environ.get(SHOW_LOGS_ENV))


@contextlib.contextmanager
def captured_stderr() -> Iterator[IO[bytes]]:
    """Redirect file descriptor 2 into a temporary file for the duration; yield the file.

    The caller decides what to do with what was captured (drop it, or replay it on failure).
    """
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with tempfile.TemporaryFile() as capture:
            os.dup2(capture.fileno(), 2)
            try:
                yield capture
            finally:
                sys.stderr.flush()
                os.dup2(saved, 2)
    finally:
        os.close(saved)


@contextlib.contextmanager
def quiet_native() -> Iterator[None]:
    """Silence native stderr, Python logging and warnings while converters and runtimes run."""
    if logs_wanted():
        yield
        return
    previous_disable = logging.root.manager.disable
    logging.disable(logging.CRITICAL)
    try:
        with captured_stderr(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous_disable)


__all__ = ["SHOW_LOGS_ENV", "captured_stderr", "logs_wanted", "quiet_native"]
