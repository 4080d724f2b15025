"""The ``export`` command, added to the main app by :func:`register`.

This module does not import TensorFlow at import time; the command imports what it needs when it runs.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from tlkit.cli.common import err, handles_errors, out, print_json
from tlkit.io.rundir import RunDir

_EPILOG = (
    "Examples: tlkit export runs/20261128-101500-mobilenet_v2-dense256 --format tflite --quantize int8\n\n"
    "tlkit export runs/20261128-101500-mobilenet_v2-dense256 --format onnx --output deploy/onnx --json"
)


def export_command(
    run_dir: Path = typer.Argument(..., metavar="RUN_DIR", help="A run directory made by tlkit train."),
    fmt: str = typer.Option(..., "--format", "-f", help="savedmodel, tflite or onnx."),
    quantize: str = typer.Option(
        "none",
        "--quantize",
        "-q",
        help="none; tflite: float16, dynamic, int8 (full integer, float32 in/out); onnx: dynamic.",
    ),
    output: Path | None = typer.Option(
        None,
        "--output",
        "-o",
        help=f"The export folder to create (must not exist, or be empty). (default: RUN_DIR/{RunDir.EXPORT}/FORMAT[-QUANTIZE], -2, -3… when taken)",
    ),
    data: Path | None = typer.Option(
        None,
        "--data",
        help="Dataset folder for the parity check (its validation images) and int8 calibration (its training images). (default: the run's data)",
    ),
    calibration_images: int = typer.Option(
        100,
        "--calibration-images",
        help="int8: training images (class-balanced, seeded) that calibrate the activation ranges.",
    ),
    parity_images: int | None = typer.Option(
        None,
        "--parity-images",
        help="Check parity on at most N validation images (class-balanced, seeded). (default: all)",
    ),
    force: bool = typer.Option(
        False,
        "--force",
        help=f"Keep the export even if it agrees with {RunDir.MODEL} less than required (recorded in export.json).",
    ),
    batch_size: int = typer.Option(32, "--batch-size", help="Images per model call in the parity check."),
    as_json: bool = typer.Option(False, "--json", help="Print export.json (plus the folder's path) as JSON."),
) -> None:
    """Export a run's model for deployment (SavedModel, TFLite, ONNX), checked against model.keras.

    Every artefact takes raw 0–255 RGB pixels (preprocessing inside, augmentation
    left out) and returns class probabilities.  Its top-1 agreement with
    model.keras on the run's validation images must reach 99.5 % (float32),
    99 % (float16) or 97 % (dynamic, int8), or nothing is written (--force keeps
    it).  The folder holds the artefact, classes.json, export.json and a README.md
    model card; `tlkit predict` and `tlkit evaluate` accept it.
    """
    from tlkit.exporting.exporter import export  # lazy: the exporter loads numpy; `tlkit --help` stays without it

    with err.status("exporting", spinner="dots") as status:
        result = export(
            run_dir,
            fmt,
            quantize=quantize,
            output=output,
            data=data,
            calibration_images=calibration_images,
            parity_images=parity_images,
            force=force,
            batch_size=batch_size,
            on_step=lambda message: status.update(escape(str(message))),
        )
    if as_json:
        return print_json(result.as_dict())
    _print_result(result)


def _print_result(result) -> None:
    from tlkit.inference.artifacts import MODEL_CARD  # lazy: artifacts loads numpy; `tlkit --help` stays without it

    info, parity = result.info, result.parity
    out.print(
        f"Exported [bold]{escape(str(info['source']['run_dir']))}[/bold] → [bold]{escape(str(result.path))}[/bold] "
        f"in {info['seconds']:.1f} s",
        soft_wrap=True,
    )
    table = Table(show_header=False, box=None, padding=(0, 2))
    table.add_column("", style="bold", no_wrap=True)
    table.add_column("")
    table.add_row(
        "artefact",
        f"{escape(str(info['artifact']))} ({result.size_bytes / 1e6:.1f} MB), "
        f"{escape(str(info['format']))} {escape(str(info['quantization']))}: {escape(str(info['quantization_detail']))}",
    )
    table.add_row(
        "input",
        f"{info['input']['name']}: float32 (batch, {info['input']['shape'][1]}, "
        f"{info['input']['shape'][2]}, 3), raw RGB 0–255",
    )
    ok = "[green]passed[/green]" if parity["passed"] else "[bold red]FAILED, kept with --force[/bold red]"
    table.add_row(
        "parity",
        f"top-1 agreement {100 * parity['top1_agreement']:.1f} % on {parity['images']} "
        f"validation images (≥ {100 * parity['min_agreement']:.1f} % required: {ok}); "
        f"max |Δprob| {parity['max_abs_prob_diff']:.4f}",
    )
    table.add_row(
        "accuracy",
        f"{RunDir.MODEL} {100 * parity['accuracy_original']:.1f} % → this export "
        f"{100 * parity['accuracy_exported']:.1f} %",
    )
    steady = parity.get("stability")
    if steady:  # measured after the failed check: is it the rounding or the model?
        from tlkit.exporting.stability import (  # lazy: loads numpy; `tlkit --help` stays without it
            kept_text,
            noise_text,
        )

        table.add_row(
            "stability",
            f"{RunDir.MODEL} keeps {kept_text(steady)} of its own answers under {noise_text(steady)} grey levels of noise",
        )
    if info.get("calibration"):
        cal = info["calibration"]
        note = "" if cal["images"] >= cal["requested"] else f" (all there are; {cal['requested']} requested)"
        table.add_row("calibration", f"{cal['images']} training images{note}")
    if info.get("stripped_layers"):
        table.add_row("left out", f"{escape(', '.join(info['stripped_layers']))} (augmentation: no-ops at inference)")
    out.print(table)
    out.print(
        f"Use it: tlkit predict {escape(str(result.path))} photos/   (how to load it without tlkit: "
        f"{escape(str(result.path / MODEL_CARD))})",
        soft_wrap=True,
    )


def register(app: typer.Typer) -> None:
    """Add ``export`` to ``app`` (a no-op when it is already there)."""
    if any(command.name == "export" for command in app.registered_commands):
        return
    app.command("export", epilog=_EPILOG)(handles_errors(export_command))
