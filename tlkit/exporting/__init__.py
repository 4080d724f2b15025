"""Export (named `exporting` so that it never shadows the API function `tlkit.export`): SavedModel / TFLite / ONNX conversion, parity checks, published export folders."""
