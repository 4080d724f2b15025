"""Import TensorFlow without its start-up noise.

TensorFlow ≥ 2.19 logs through absl before ``TF_CPP_MIN_LOG_LEVEL`` is read
(oneDNN notes, "Could not find cuda drivers", cuInit errors on CPU machines),
so tlkit captures the process's stderr while TensorFlow starts and replays it
only when the import fails.  ``TLKIT_TF_LOGS=1`` shows everything.
"""

from __future__ import annotations

import os
import sys
import tempfile


def import_tensorflow():
    """Import (once) and return ``tensorflow``, with device discovery done, quietly."""
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if os.environ.get("TLKIT_TF_LOGS"):
        import tensorflow as tf

        return tf
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            import keras  # noqa: F401  pylint: disable=unused-import  (imports TensorFlow as its backend)
            import tensorflow as tf

            tf.config.list_physical_devices()  # device start-up logs happen here, not mid-run
        except BaseException:
            os.dup2(saved, 2)
            capture.seek(0)
            sys.stderr.write(capture.read().decode("utf-8", "replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
    return tf
