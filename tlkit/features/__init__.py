"""The frozen base's features: the feature store (one owner of the cache), engines, ONNX export, shards, datasets."""
