"""The ``tlkit`` command line (Typer + rich): a thin layer over :mod:`tlkit.api`.

``tlkit.cli.app`` holds the root app; one module per group of commands
(``listing``, ``train``, ``evaluate``, ``weights``, ``cache``, ``new_plugin``)
adds its commands with ``register(app)``; ``common`` has the consoles, JSON
output and the one-line error handling every command shares.
"""

from tlkit.cli.app import app, main

__all__ = ["app", "main"]
