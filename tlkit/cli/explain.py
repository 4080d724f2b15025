"""The ``explain`` command (Grad-CAM overlays), added to the main app by :func:`register`.

This module does not import TensorFlow at import time; the command imports what it needs when it runs.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from tlkit.cli.common import err, handles_errors, out, print_json

_EPILOG = (
    "Example: tlkit explain runs/20261128-101500-mobilenet_v2-dense256 photos/ --output why "
    "&& xdg-open why/cat_001-gradcam.png"
)


def explain_command(
    run_or_model: Path = typer.Argument(
        ..., metavar="RUN_DIR", help="A run directory made by tlkit train (or its .keras model file)."
    ),
    images: list[str] = typer.Argument(
        ...,
        metavar="IMAGES...",
        help="Image files, folders (searched recursively) or globs (quote them: 'photos/**/*.jpg').",
    ),
    output: Path = typer.Option(
        ...,
        "--output",
        help="A new folder for one <image>-gradcam.png overlay per image and explanations.json.",
    ),
    class_name: str | None = typer.Option(
        None, "--class", help="Explain this class for every image. (default: each image's predicted class)"
    ),
    layer: str | None = typer.Option(
        None,
        "--layer",
        help="A layer of the base to explain. (default: the base spec's explain_layer, else the base's output)",
    ),
    batch_size: int = typer.Option(16, "--batch-size", help="Images per model call."),
    as_json: bool = typer.Option(False, "--json", help="Print the index (as in explanations.json) as JSON."),
) -> None:
    """Explain predictions with Grad-CAM: where in each image the model found the class.

    Writes a heatmap overlay (blue: no evidence, red: most) per image, at the image's
    own size, and an explanations.json index into the new --output folder.  Unreadable
    files are reported on stderr and skipped.
    """
    from tlkit.evaluation.gradcam import explain  # lazy: Grad-CAM loads numpy and PIL; `tlkit --help` stays without it

    result = explain(run_or_model, images, output=output, class_name=class_name, layer=layer, batch_size=batch_size)
    for skipped in result.skipped:
        err.print(
            f"[yellow]Skipped[/yellow] {escape(str(skipped['path']))}: {escape(str(skipped['reason']))}", soft_wrap=True
        )
    if as_json:
        return print_json({**result.as_dict(), "output": str(result.output)})
    table = Table(title=f"Grad-CAM of {escape(str(result.layer))}", title_justify="left")
    table.add_column("image", overflow="fold", ratio=3)
    table.add_column("predicted", overflow="fold", ratio=1)
    table.add_column("p", justify="right", no_wrap=True)
    if class_name is not None:
        table.add_column(f"p({escape(str(class_name))})", justify="right", no_wrap=True)
    table.add_column("overlay", overflow="fold", ratio=2)
    for item in result.explanations:
        cells = [escape(str(item.path)), escape(str(item.predicted)), f"{item.predicted_prob:.3f}"]
        if class_name is not None:
            cells.append(f"{item.prob:.3f}")
        table.add_row(*cells, escape(Path(item.file).name if item.file else "—"))
    out.print(table)
    for note in result.notes:
        out.print(f"[yellow]Note:[/yellow] {escape(str(note))}")
    index = result.index
    assert index is not None  # --output is required, so explanations.json was written
    out.print(
        f"Wrote {len(result.explanations)} overlay(s) and {escape(str(index.name))} into {escape(str(result.output))}",
        soft_wrap=True,
    )


def register(app: typer.Typer) -> None:
    """Add ``explain`` to ``app`` (a no-op if it is already there)."""
    if "explain" not in {command.name for command in app.registered_commands}:
        app.command("explain", epilog=_EPILOG)(handles_errors(explain_command))
