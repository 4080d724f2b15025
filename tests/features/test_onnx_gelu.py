"""ONNX export of models with Keras's exact GELU (every transformer): tf2onnx writes it with an ``Erfc``
node, which ONNX does not define; ``export_onnx`` rewrites it so that ONNX Runtime runs the model."""

from __future__ import annotations

import numpy as np


def test_exact_gelu_exports_and_runs_on_onnx_runtime(tmp_path):
    import keras
    import onnx
    import onnxruntime as ort

    from tlkit.features.onnx_export import export_onnx

    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Dense(16, activation="gelu")(inputs)  # approximate=False: 0.5·x·erfc(−x/√2)
    model = keras.Model(inputs, keras.layers.Dense(4)(x))
    path = export_onnx(model, tmp_path / "gelu.onnx", 8)
    ops = {node.op_type for node in onnx.load(str(path)).graph.node}
    assert "Erf" in ops and "Erfc" not in ops
    pixels = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype("float32")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: pixels})[0]
    np.testing.assert_allclose(got, np.asarray(model(pixels)), atol=1e-5)
