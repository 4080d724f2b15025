"""Import TensorFlow without its start-up noise.

TensorFlow ≥ 2.19 logs through absl before ``TF_CPP_MIN_LOG_LEVEL`` is read
(oneDNN notes, "Could not find cuda drivers", cuInit errors on CPU machines),
so tlkit captures the process's stderr while TensorFlow starts and replays it
only when the import fails.  ``TLKIT_TF_LOGS=1`` shows everything.
"""

from __future__ import annotations

import os
import sys

from tlkit.io.native import captured_stderr, logs_wanted


def import_tensorflow():
    """Import (once) and return ``tensorflow``, with device discovery done, quietly."""
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if logs_wanted():
        import tensorflow as tf  # lazy: this function is where TensorFlow is imported (quietly, on first need)

        return tf
    failure: BaseException | None = None
    with captured_stderr() as capture:
        try:
            # lazy: this function is where TensorFlow is imported (quietly, on first need)
            import keras  # noqa: F401  pylint: disable=unused-import  (imports TensorFlow as its backend)
            import tensorflow as tf

            tf.config.list_physical_devices()  # device start-up logs happen here, not mid-run
        except BaseException as exc:  # replayed below, once stderr is the user's again
            failure = exc
            capture.seek(0)
            said = capture.read().decode("utf-8", "replace")
    if failure is not None:
        sys.stderr.write(said)
        raise failure
    return tf
