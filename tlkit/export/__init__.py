"""Export: SavedModel / TFLite / ONNX conversion, parity checks, published export folders."""
