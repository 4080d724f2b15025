"""Files: atomic writes and published folders, hashing, TOML, quiet native stderr, the TensorFlow import, the run directory."""
