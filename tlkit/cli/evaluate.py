"""The ``evaluate``, ``predict``, ``report`` and ``compare`` commands, added to the main app by :func:`register`.

This module does not import TensorFlow at import time; a command imports what it needs when it runs.
"""

from __future__ import annotations

import csv
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from tlkit.cli.common import err, handles_errors, out, print_json
from tlkit.errors import TlkitError
from tlkit.io.rundir import RunDir

COMMANDS = ("evaluate", "predict", "report", "compare")
_EVAL_FILES = ", ".join(RunDir.EVALUATION_FILES.values())
FORMATS = ("table", "json", "csv")
_TTA_HELP = (
    "Test-time augmentation: average the probabilities over deterministic views of each image — "
    "flips (original + mirror) or N, the first N (2-12) of original, mirror, 5 crops of 90 %, mirrored crops."
)


def _shown_path(path: str | Path) -> str:
    """``path`` relative to the current folder when inside it (shorter in tables)."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except (ValueError, OSError):
        return str(path)


# --------------------------------------------------------------------------- evaluate


def evaluate_command(
    run_or_model: Path = typer.Argument(
        ...,
        metavar="RUN_DIR|MODEL",
        help="A run directory, a .keras model file or an exported model (.tflite, .onnx, SavedModel or `tlkit export` folder).",
    ),
    data: Path | None = typer.Option(
        None,
        "--data",
        help="Labelled images: a dataset folder (train/, optionally val/) or a folder of class sub-folders. (default: the run's validation data; for an export folder, that of the run it came from)",
    ),
    split: str = typer.Option("val", "--split", help="For a dataset folder with train/: val, train or all."),
    top_k: int = typer.Option(5, "--top-k", help="k of the top-k accuracy."),
    batch_size: int = typer.Option(32, "--batch-size", help="Images per model call."),
    output: Path | None = typer.Option(
        None, "--output", help=f"Where to write {_EVAL_FILES}. (default: RUN_DIR/{RunDir.EVALUATION})"
    ),
    mistakes: int = typer.Option(
        15, "--mistakes", help=f"How many of the most confident mistakes {RunDir.EVALUATION_FILES['mistakes']} shows."
    ),
    as_json: bool = typer.Option(
        False, "--json", help=f"Print the metrics as JSON (as in {RunDir.EVALUATION_FILES['metrics']})."
    ),
    tta: str | None = typer.Option(
        None, "--tta", metavar="flips|N", help=_TTA_HELP + " Reports the metrics without and with TTA side by side."
    ),
    labels: Path | None = typer.Option(
        None,
        "--labels",
        help="A labels CSV (path,label[,split]; path,labels for a multi-label run), paths relative to "
        "--data (default: the run's data folder); --split picks its rows. (default: the run's own --labels)",
    ),
    track: bool | None = typer.Option(
        None,
        "--track/--no-track",
        help="Add the metrics and files to the run's tracked experiment run (tlkit train --track), or not; "
        "--track fails for a run that was not tracked. (default: when the run was tracked)",
    ),
) -> None:
    """Measure a trained model: accuracy, top-k, per-class precision/recall/F1, confusion matrix, mistakes.

    Writes RUN_DIR/evaluation/{metrics.json, confusion_matrix.png, mistakes.png};
    the run's training metrics.json is left as it is.
    """
    # lazy: rich.progress adds ~3 ms to every `tlkit` start; only a command that shows a bar needs it
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    # lazy: evaluation, export and TTA load numpy; `tlkit --help` stays without it
    from tlkit.evaluation.evaluate import evaluate
    from tlkit.exporting.exporter import recorded_data
    from tlkit.inference.tta import parse_tta

    views = parse_tta(tta)  # a bad value fails before the model is loaded
    # An export folder records its run's data (and split seed): evaluate it on the same images.
    eval_data: str | Path | None = data if data is not None else recorded_data(run_or_model)
    with Progress(
        TextColumn("evaluating"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=err, transient=True
    ) as progress:
        task = progress.add_task("", total=None)
        result = evaluate(
            run_or_model,
            eval_data,
            top_k=top_k,
            batch_size=batch_size,
            split=split,
            output_dir=output,
            max_mistakes=mistakes,
            on_start=lambda n: progress.update(task, total=n),
            progress=lambda n: progress.advance(task, n),
            tta=views,
            labels=labels,
            track=track,
        )
    if as_json:
        return print_json(result.as_dict())
    if getattr(result, "multi_label", False):
        return _print_multi_label_evaluation(out, result)
    _print_evaluation(out, result)


def _print_multi_label_evaluation(out, result) -> None:
    """A multi-label run's evaluation: the summary, then per-label precision/recall/F1/support/threshold."""
    m = result.metrics
    out.print(
        f"Evaluated [bold]{escape(str(result.run_dir or result.model))}[/bold] (multi-label) on {escape(str(result.split))}: "
        f"{result.num_images} images in {result.seconds:.1f} s"
    )
    summary = Table(show_header=False, title="Summary", title_justify="left")
    summary.add_column("", style="bold", no_wrap=True)
    summary.add_column("", justify="right")
    summary.add_row("subset accuracy (exact label set)", f"{m['subset_accuracy']:.4f}")
    summary.add_row("hamming accuracy (label decisions)", f"{m['hamming_accuracy']:.4f}")
    summary.add_row("micro F1", f"{result.micro['f1']:.4f}")
    summary.add_row("macro F1", f"{result.macro['f1']:.4f}")
    summary.add_row("log loss (binary)", f"{m['log_loss']:.4f}")
    summary.add_row("images with a wrong label set", f"{len(result.mistakes)} of {result.num_images}")
    out.print(summary)
    table = Table(title="Per label", title_justify="left")
    table.add_column("label", overflow="fold")
    for column in ("threshold", "precision", "recall", "F1", "support"):
        table.add_column(column, justify="right")
    for name, c in result.per_class.items():
        table.add_row(
            escape(str(name)),
            f"{c['threshold']:.3f}",
            f"{c['precision']:.3f}",
            f"{c['recall']:.3f}",
            f"{c['f1']:.3f}",
            str(c["support"]),
        )
    table.add_section()
    for label, avg in (("micro avg", result.micro), ("macro avg", result.macro), ("weighted avg", result.weighted)):
        table.add_row(
            label, "", f"{avg['precision']:.3f}", f"{avg['recall']:.3f}", f"{avg['f1']:.3f}", "", style="bold"
        )
    out.print(table)
    for note in result.notes:
        out.print(f"[yellow]Note:[/yellow] {escape(str(note))}")
    out.print("Wrote:")
    for path in result.files.values():
        out.print(f"  {escape(str(path))}", soft_wrap=True)


def _print_evaluation(out, result) -> None:
    out.print(
        f"Evaluated [bold]{escape(str(result.run_dir or result.model))}[/bold] on {escape(str(result.split))}: "
        f"{result.num_images} images in {result.seconds:.1f} s"
    )
    if result.tta:
        _print_tta_summary(out, result)
    else:
        summary = Table(show_header=False, title="Summary", title_justify="left")
        summary.add_column("", style="bold", no_wrap=True)
        summary.add_column("", justify="right")
        summary.add_row("accuracy", f"{result.accuracy:.4f}")
        summary.add_row(f"top-{result.top_k} accuracy", f"{result.top_k_accuracy:.4f}")
        summary.add_row("macro F1", f"{result.macro['f1']:.4f}")
        summary.add_row("weighted F1", f"{result.weighted['f1']:.4f}")
        summary.add_row("log loss", f"{result.log_loss:.4f}")
        summary.add_row("mistakes", f"{len(result.mistakes)} of {result.num_images}")
        out.print(summary)

    per_class = Table(title="Per class", title_justify="left")
    per_class.add_column("class", overflow="fold")
    for column in ("precision", "recall", "F1", "support"):
        per_class.add_column(column, justify="right")
    for name, m in result.per_class.items():
        per_class.add_row(escape(str(name)), f"{m.precision:.3f}", f"{m.recall:.3f}", f"{m.f1:.3f}", str(m.support))
    per_class.add_section()
    for label, avg in (("macro avg", result.macro), ("weighted avg", result.weighted)):
        per_class.add_row(
            label,
            f"{avg['precision']:.3f}",
            f"{avg['recall']:.3f}",
            f"{avg['f1']:.3f}",
            str(result.num_images),
            style="bold",
        )
    out.print(per_class)

    _print_confusion(out, result)
    for note in result.notes:
        out.print(f"[yellow]Note:[/yellow] {escape(str(note))}")
    for skipped in result.skipped[:10]:
        out.print(
            f"[yellow]Skipped unreadable image[/yellow] {escape(str(skipped['path']))}: {escape(str(skipped['reason']))}"
        )
    out.print("Wrote:")
    for path in result.files.values():
        out.print(f"  {escape(str(path))}", soft_wrap=True)


def _print_tta_summary(out, result) -> None:
    """The headline metrics without and with test-time augmentation, side by side."""
    tta = result.tta
    table = Table(title=f"Summary — test-time augmentation {escape(str(tta['setting']))}", title_justify="left")
    table.add_column("", style="bold", no_wrap=True)
    table.add_column("without TTA", justify="right")
    table.add_column(f"with TTA ({len(tta['views'])} views)", justify="right")
    plain, averaged = tta["without_tta"], tta["with_tta"]
    for label, key in (
        ("accuracy", "accuracy"),
        (f"top-{result.top_k} accuracy", "top_k_accuracy"),
        ("macro F1", "macro_f1"),
        ("weighted F1", "weighted_f1"),
        ("log loss", "log_loss"),
    ):
        table.add_row(label, f"{plain[key]:.4f}", f"{averaged[key]:.4f}")
    n = result.num_images
    table.add_row("mistakes", f"{plain['num_mistakes']} of {n}", f"{averaged['num_mistakes']} of {n}")
    out.print(table)
    out.print(f"Views: {escape(', '.join(tta['views']))}. Per class, confusion matrix and mistakes below are with TTA.")


def _print_confusion(out, result) -> None:
    """The confusion matrix as two compact tables: counts, then % of each true class (row)."""
    n = len(result.classes)
    names = RunDir.EVALUATION_FILES
    if n > 20:
        out.print(
            f"Confusion matrix: {n} classes are too many for a table here; see "
            f"{escape(str(result.files.get('confusion_matrix', names['confusion_matrix'])))} and "
            f"{escape(str(result.files.get('metrics', names['metrics'])))}."
        )
        return
    numbered = n > 6 or max(len(c) for c in result.classes) > 8
    for title, values, cell in (
        ("Confusion matrix: counts (rows: true class, columns: predicted class)", result.confusion, lambda v: str(v)),
        (
            "Confusion matrix: % of each true class (row-normalised)",
            result.confusion_normalized,
            lambda v: f"{100 * v:.0f}",
        ),
    ):
        table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, padding=(0, 1))
        table.add_column("true \\ predicted", no_wrap=True)
        for j, name in enumerate(result.classes):
            table.add_column(str(j) if numbered else escape(str(name)), justify="right", no_wrap=True)
        for i, name in enumerate(result.classes):
            cells = []
            for j in range(n):
                count = result.confusion[i][j]
                style = "bold green" if i == j else ("red" if count else "dim")
                cells.append(f"[{style}]{cell(values[i][j]) if count else '·'}[/{style}]")
            table.add_row(f"{i} {escape(str(name))}" if numbered else escape(str(name)), *cells)
        out.print(table)


# --------------------------------------------------------------------------- predict


def predict_command(
    run_or_model: Path = typer.Argument(
        ...,
        metavar="RUN_DIR|MODEL",
        help="A run directory, a .keras model file or an exported model (.tflite, .onnx, SavedModel or `tlkit export` folder).",
    ),
    paths: list[str] = typer.Argument(
        ...,
        metavar="PATH...",
        help="Image files, folders (searched recursively) or globs (quote them: 'photos/**/*.jpg').",
    ),
    top_k: int = typer.Option(3, "--top-k", help="Classes to show per image."),
    batch_size: int = typer.Option(32, "--batch-size", help="Images per model call."),
    fmt: str = typer.Option("table", "--format", "-f", help="table, json (JSON Lines: one object per image) or csv."),
    as_json: bool = typer.Option(False, "--json", help="Same as --format json."),
    tta: str | None = typer.Option(None, "--tta", metavar="flips|N", help=_TTA_HELP),
) -> None:
    """Predict the top-k classes of images, streamed: results appear as batches finish.

    Unreadable files are reported on stderr and skipped; the exit status is 0
    unless no file at all could be read.
    """
    from tlkit.inference.prediction import predict  # lazy: prediction loads numpy; `tlkit --help` stays without it
    from tlkit.inference.tta import parse_tta

    views = parse_tta(tta)
    fmt = "json" if as_json else fmt.lower()
    if fmt not in FORMATS:
        raise TlkitError(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    if top_k < 1:
        raise TlkitError(f"--top-k must be at least 1, got {top_k}")
    predictions = predict(run_or_model, paths, top_k=top_k, batch_size=batch_size, tta=views)  # loads the model
    started = time.perf_counter()
    writers: dict[str, type[_TableWriter | _JsonWriter | _CsvWriter]] = {
        "table": _TableWriter,
        "json": _JsonWriter,
        "csv": _CsvWriter,
    }
    writer = writers[fmt](out, top_k)
    done = failed = 0
    for prediction in predictions:
        if prediction.ok:
            done += 1
            writer.write(prediction)
        else:
            failed += 1
            err.print(
                f"[yellow]Skipped[/yellow] {escape(str(prediction.path))}: {escape(str(prediction.error))}",
                soft_wrap=True,
            )
    writer.close()
    elapsed = time.perf_counter() - started
    if done == 0:
        raise TlkitError(f"none of the {failed} file(s) could be read (see above); nothing was predicted")
    rate = f" ({done / elapsed:.1f} images/s)" if elapsed > 0 else ""
    err.print(
        f"Predicted {done} image(s) in {elapsed:.1f} s{rate}"
        + (f" with test-time augmentation {views.describe()}" if views else "")
        + (f"; skipped {failed} unreadable file(s)" if failed else ""),
        soft_wrap=True,
    )


class _JsonWriter:
    def __init__(self, out, top_k: int) -> None:
        self.stream = sys.stdout

    def write(self, prediction) -> None:
        self.stream.write(json.dumps(prediction.as_dict()) + "\n")
        self.stream.flush()

    def close(self) -> None:
        self.stream.flush()


class _CsvWriter:
    def __init__(self, out, top_k: int) -> None:
        self.stream = sys.stdout
        self.top_k = top_k
        self.writer = csv.writer(self.stream, lineterminator="\n")
        header = ["path"]
        for rank in range(1, top_k + 1):
            header += [f"rank{rank}_label", f"rank{rank}_prob"]
        self.header: list[str] | None = header  # written with the first row (multi-label has its own)

    def _write_header(self, multi_label: bool = False) -> None:
        if self.header is not None:
            self.writer.writerow(["path", "labels", "probs"] if multi_label else self.header)
            self.header = None

    def write(self, prediction) -> None:
        self._write_header(prediction.multi_label)
        if prediction.multi_label:  # every label at or above its threshold, "|"-separated
            probs = "|".join(f"{p:.6f}" for p in prediction.probs)
            self.writer.writerow([prediction.path, "|".join(prediction.labels), probs])
            self.stream.flush()
            return
        row: list[Any] = [prediction.path]
        for rank in range(self.top_k):
            if rank < len(prediction.labels):
                row += [prediction.labels[rank], f"{prediction.probs[rank]:.6f}"]
            else:  # fewer classes than --top-k
                row += ["", ""]
        self.writer.writerow(row)
        self.stream.flush()

    def close(self) -> None:
        self._write_header()
        self.stream.flush()


class _TableWriter:
    """Rows printed as they come (one header), in fixed-width columns, so long runs stream."""

    def __init__(self, out, top_k: int) -> None:
        self.out = out
        self.top_k = top_k
        width = out.width or 100
        self.widths = {"label": 16, "prob": 6, "next": 28 if top_k > 1 else 0}
        spare = width - sum(self.widths.values()) - 2 * (4 if top_k > 1 else 3)
        self.widths["path"] = max(20, min(70, spare))
        self.printed_header = False

    def _table(self, header: bool):
        table = Table(box=box.SIMPLE_HEAD, show_header=header, show_edge=False, pad_edge=False, padding=(0, 1))
        table.add_column("path", width=self.widths["path"], overflow="fold")
        table.add_column("prediction", width=self.widths["label"], overflow="fold", style="bold")
        table.add_column("prob", width=self.widths["prob"], justify="right")
        if self.top_k > 1:
            table.add_column(f"next {self.top_k - 1}", width=self.widths["next"], overflow="fold", style="dim")
        return table

    def write(self, prediction) -> None:
        table = self._table(header=not self.printed_header)
        if prediction.multi_label:  # every label at or above its threshold
            shown = ", ".join(f"{escape(str(lbl))} {p:.3f}" for lbl, p in zip(prediction.labels, prediction.probs))
            top = f"{prediction.prob:.3f}" if prediction.labels else "—"
            cells = [escape(_shown_path(prediction.path)), escape("|".join(prediction.labels) or "(none)"), top]
            table.add_row(*(cells + ([shown] if self.top_k > 1 else [])))
            self.out.print(table)
            self.printed_header = True
            return
        others = ", ".join(f"{escape(str(lbl))} {p:.3f}" for lbl, p in zip(prediction.labels[1:], prediction.probs[1:]))
        cells = [escape(_shown_path(prediction.path)), escape(str(prediction.label)), f"{prediction.prob:.3f}"]
        table.add_row(*(cells + ([others] if self.top_k > 1 else [])))
        self.out.print(table)
        self.printed_header = True

    def close(self) -> None:
        pass


# --------------------------------------------------------------------------- report and compare


def report_command(
    run_dir: Path = typer.Argument(..., metavar="RUN_DIR", help="A run directory made by tlkit train."),
    evaluate: bool = typer.Option(
        True,
        "--evaluate/--no-evaluate",
        help="Evaluate on the run's validation data first if the run has no evaluation yet.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the report's path as JSON."),
) -> None:
    """Write RUN_DIR/report.html: one self-contained page (configuration, data, curves, metrics, confusion, mistakes).

    Images are inlined and there is no script and no network access, so the file
    can be opened anywhere or mailed as it is.
    """
    # lazy: the report loads numpy and PIL; `tlkit --help` stays without it
    from tlkit.evaluation.report import write_report

    path = write_report(run_dir, evaluate=evaluate)
    if as_json:
        return print_json({"report": str(path)})
    out.print(f"Wrote {escape(str(path))}")
    out.print(f"Open it in a browser: file://{escape(str(path.resolve()))}", soft_wrap=True)


def compare_command(
    run_dirs: list[Path] = typer.Argument(
        ..., metavar="RUN_DIR...", help="Run directories made by tlkit train (e.g. runs/*/)."
    ),
    plot: Path = typer.Option(
        Path("compare.png"), "--plot", help="Where to write the overlay of the validation curves."
    ),
    no_plot: bool = typer.Option(False, "--no-plot", help="Print the table only."),
    as_json: bool = typer.Option(False, "--json", help="Print the rows as JSON."),
) -> None:
    """Compare runs: base, head, augmentations, epochs, best val accuracy, val F1, train time — and their curves."""
    # lazy: compare loads its figures (numpy, PIL); `tlkit --help` stays without it
    from tlkit.evaluation.compare import compare

    result = compare(run_dirs, plot_path=None if no_plot else plot)
    if as_json:
        return print_json(result.as_dict())
    best = max((r["best_val_accuracy"] for r in result.rows if r["best_val_accuracy"] is not None), default=None)
    table = Table(title=f"{len(result.rows)} run(s)", title_justify="left")
    table.add_column("run", overflow="fold", ratio=3)
    table.add_column("base + head", overflow="fold", ratio=2)
    table.add_column("augmentations", overflow="fold", ratio=2)
    for column in ("epochs", "best val acc (epoch)", "val F1", "train time"):
        table.add_column(column, justify="right", no_wrap=column != "best val acc (epoch)")
    for r in result.rows:
        acc = r["best_val_accuracy"]
        acc_text = "—" if acc is None else f"{acc:.4f} ({r['best_epoch']})"
        if acc is not None and acc == best and len(result.rows) > 1:
            acc_text = f"[bold green]{acc_text}[/bold green]"
        table.add_row(
            escape(str(r["run"])),
            escape(f"{r['base']} + {r['head']}"),
            escape(", ".join(r["augmentations"]) or "—"),
            str(r["epochs"]) + ("" if r["finished"] else " (unfinished)"),
            acc_text,
            "—" if r["val_f1"] is None else f"{r['val_f1']:.4f}",
            "—" if r["train_time_s"] is None else f"{r['train_time_s']:.1f} s",
        )
    out.print(table)
    if any(r["val_f1_source"] == "evaluation (macro)" for r in result.rows):
        out.print("val F1: macro F1 of `tlkit evaluate` where a run was evaluated, else val_f1 of the best epoch.")
    if result.plot:
        out.print(f"Wrote {escape(str(result.plot))}")


# --------------------------------------------------------------------------- registration

_EPILOGS = {
    "evaluate": "Example: tlkit evaluate runs/20261128-101500-mobilenet_v2-dense256 --data data/test --json",
    "predict": "Example: tlkit predict runs/20261128-101500-mobilenet_v2-dense256 photos/ 'more/*.jpg' --format csv > predictions.csv",
    "report": "Example: tlkit report runs/20261128-101500-mobilenet_v2-dense256 && xdg-open "
    f"runs/20261128-101500-mobilenet_v2-dense256/{RunDir.REPORT}",
    "compare": "Example: tlkit compare runs/*/ --plot compare.png",
}
_FUNCTIONS: dict[str, Callable[..., None]] = {
    "evaluate": evaluate_command,
    "predict": predict_command,
    "report": report_command,
    "compare": compare_command,
}


def register(app: typer.Typer) -> None:
    """Add ``evaluate``, ``predict``, ``report`` and ``compare`` to ``app`` (a no-op for those already there)."""
    existing = {command.name for command in app.registered_commands}
    for name in COMMANDS:
        if name in existing:
            continue
        app.command(name, epilog=_EPILOGS[name])(handles_errors(_FUNCTIONS[name]))
