"""Regenerate docs/options.md from the training options declared in tlkit/config/options.py.

Run ``.venv/bin/python docs/make_options_md.py`` after changing a ``TrainConfig``
field; tests/test_docs.py fails when the file is out of date.
"""

from __future__ import annotations

import sys
from pathlib import Path

HEADER = """# Training options

<!-- Generated from tlkit/config/options.py by docs/make_options_md.py — do not edit by hand. -->

Every option of `tlkit train`, grouped as in `tlkit train --help`. Each one is also a key of a
TOML config file (`--config FILE`, or a run's `config.toml`; flags override the file) and a
keyword argument of `tlkit.train(...)`. In TOML, on/off options are `true`/`false` and lists
are arrays (`metrics = ["accuracy", "f1"]`, `augmentations = ["flip_horizontal"]`); head
parameters are a `[head_params]` table. What the options do, and the rules that tie some of them
together, are explained in [training.md](training.md) and the [user guide](user-guide.md).
"""

COMMAND_HEADER = """## Options of the command only

These are not part of the configuration (a run's `config.toml` does not record them).

| flag | meaning |
|---|---|
"""


def _command_rows() -> list[str]:
    """The ``tlkit train`` options that are not TrainConfig fields, read from the command itself."""
    import typer.main

    from tlkit.cli.app import app
    from tlkit.config.options import OPTIONS

    command = typer.main.get_command(app).commands["train"]  # type: ignore[attr-defined]
    rows = []
    for param in command.params:
        if param.name in OPTIONS or param.name == "help":
            continue
        flags = ", ".join(f"`{flag}`" for flag in [*param.opts, *param.secondary_opts])
        rows.append(f"| {flags} | {param.help} |")
    return rows


def render() -> str:
    """The whole of docs/options.md."""
    from tlkit.config.options import options_markdown

    return "\n".join([HEADER, options_markdown(), COMMAND_HEADER + "\n".join(_command_rows()), ""])


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
    target = Path(__file__).with_name("options.md")
    target.write_text(render(), encoding="utf-8")
    sys.stdout.write(f"wrote {target}\n")
