"""What a run is asked to do: training options declared once, TOML files, resolving names to specs, pre-flight checks."""
