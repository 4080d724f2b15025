"""Exporting a Keras model to ONNX: constants folded, written atomically, with tf2onnx's memory tamed.

Used for the feature engine's frozen base (:mod:`tlkit.features.engines`) and by
``tlkit export --format onnx`` (:mod:`tlkit.exporting.formats`).  Importing this module stays
light: TensorFlow, onnx and tf2onnx are imported by :func:`export_onnx` only.
"""

from __future__ import annotations

import copy
import gc
import os
import tempfile
import types
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np

from tlkit.features.memory import return_freed_memory
from tlkit.io.native import quiet_native

LARGE_EXPORT_PARAMS = 10_000_000  # above: free tf2onnx's discarded graph copies as it goes (see export_onnx)


def export_onnx(feature_model: Any, path: Path, image_size: int) -> Path:
    """Export ``feature_model`` to ONNX at ``path`` (atomically), constants folded.

    Converts the same traced ``tf.function`` Keras's ``model.export(format="onnx")``
    would, with tf2onnx directly so that tensors the graph captures (e.g.
    EfficientNet's and ``Normalization``'s mean/variance, which the exporter
    leaves as extra graph inputs) can be folded back into initializers.
    """
    # lazy: TensorFlow, onnx and tf2onnx take seconds to import; only an export needs them
    import onnx
    import tensorflow as tf
    import tf2onnx
    from onnx import numpy_helper

    spec = tf.TensorSpec((None, image_size, image_size, 3), tf.float32, name="image")
    fn = tf.function(lambda x: feature_model(x, training=False))
    # Traced once here; tf2onnx reuses this very trace (same signature), so the
    # captured placeholders' names match the ONNX inputs below.
    graph = fn.get_concrete_function(spec).graph
    constants = {
        internal.name: external.numpy()
        for external, internal in graph.captures
        if external.dtype != tf.resource and hasattr(external, "numpy")
    }
    # Big graphs only: each collection costs ~0.2 s in a large heap, ~26 of them per export.
    collect = _collect_discarded_graphs() if feature_model.count_params() > LARGE_EXPORT_PARAMS else nullcontext()
    with collect, quiet_native():
        proto, _ = tf2onnx.convert.from_function(fn, input_signature=[spec], opset=17)
    return_freed_memory()  # the converter's discarded graphs: hundreds of MB the allocator keeps otherwise
    for graph_input in list(proto.graph.input)[1:]:
        if graph_input.name not in constants:
            raise RuntimeError(f"exported model has an unexpected input {graph_input.name!r}")
        value = np.asarray(constants[graph_input.name])
        proto.graph.initializer.append(numpy_helper.from_array(value, graph_input.name))
        proto.graph.input.remove(graph_input)
    _replace_erfc(proto)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        onnx.save(proto, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _replace_erfc(proto: Any) -> None:
    """Rewrite each ``Erfc`` node as ``1 − Erf(x)``.

    tf2onnx passes ``tf.math.erfc`` through as an ``Erfc`` node, which ONNX does not define
    (ONNX Runtime refuses the model); Keras's exact GELU computes ``0.5·x·erfc(−x/√2)``, so every
    transformer backbone (ViT, DeiT, DINOv2) has them.
    """
    # lazy: onnx is imported by export_onnx only
    from onnx import helper, numpy_helper

    if not any(node.op_type == "Erfc" for node in proto.graph.node):
        return
    one = "tlkit_erfc_one"
    proto.graph.initializer.append(numpy_helper.from_array(np.array(1.0, dtype=np.float32), one))
    nodes = []
    for node in proto.graph.node:
        if node.op_type != "Erfc":
            nodes.append(node)
            continue
        erf = f"{node.output[0]}_erf"
        nodes.append(helper.make_node("Erf", [node.input[0]], [erf], name=f"{node.name}_erf"))
        nodes.append(helper.make_node("Sub", [one, erf], [node.output[0]], name=node.name))
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)


@contextmanager
def _collect_discarded_graphs() -> Iterator[None]:
    """Free each graph tf2onnx's optimizer discards before it copies the next one.

    ``tf2onnx.optimizer.optimize_graph`` deep-copies the whole graph (weights
    included) before every optimizer pass and drops the old copy; the copies
    are reference cycles, so they pile up until Python's cyclic collector runs.
    For ResNet50 that took the export to a 6.9 GB peak; collecting before each
    copy keeps it at 2.8 GB (and the export is faster).  Measured in bench/README.md.
    """
    # lazy: tf2onnx imports TensorFlow; only a (large) export gets here
    import tf2onnx.optimizer as optimizer_module

    def deepcopy(value: Any, *args: Any, **kwargs: Any) -> Any:
        gc.collect()
        return copy.deepcopy(value, *args, **kwargs)

    original = optimizer_module.copy
    optimizer_module.copy = types.SimpleNamespace(deepcopy=deepcopy)
    try:
        yield
    finally:
        optimizer_module.copy = original
        gc.collect()


__all__ = ["LARGE_EXPORT_PARAMS", "export_onnx"]
