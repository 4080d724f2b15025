"""One self-contained HTML report per run: ``<run>/report.html``.

Everything is inside the file — CSS inline, images base64-inlined, no
JavaScript, no network — so it can be mailed, archived or opened offline.
Sections (element ids): ``config``, ``dataset``, ``curves``, ``metrics``,
``confusion``, ``mistakes`` (with ``explanations``: Grad-CAM overlays of the
most confident mistakes, when the model and their images are at hand).

If the run has no evaluation yet (``<run>/evaluation/metrics.json``),
:func:`write_report` first evaluates the model on the run's validation data
(small, and what training measured), so the report always shows the metrics,
the confusion matrix and the mistakes; pass ``evaluate=False`` to show the
training metrics only.
"""

from __future__ import annotations

import base64
import io
import json
import math
import time
from pathlib import Path
from typing import Any

from PIL import Image

from tlkit.data.labels_csv import scan_for_config
from tlkit.errors import TlkitError
from tlkit.evaluation import evaluate as evaluation
from tlkit.evaluation.compare import RunInfo, read_run
from tlkit.evaluation.figures import confusion_figure, figure_png, history_figure
from tlkit.evaluation.gradcam import explain_mistakes
from tlkit.evaluation.html import PAGE_CSS as _CSS
from tlkit.evaluation.html import data_uri as _png_uri
from tlkit.evaluation.html import escape as _e
from tlkit.evaluation.html import jpeg_thumbnail as _jpeg_thumb
from tlkit.inference.prediction import load_keras_model
from tlkit.io.files import write_json
from tlkit.io.rundir import RunDir
from tlkit.version import __version__

__all__ = ["SECTIONS", "write_report"]

SECTIONS = ("config", "dataset", "curves", "metrics", "confusion", "mistakes")
"""The ids of the report's sections, in order."""

_SAMPLES_PER_CLASS = 8
_MAX_SAMPLE_CLASSES = 40
_EXPLAINED_MISTAKES = 6


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return "—" if math.isnan(value) else f"{value:.{digits}f}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_fmt(v, digits) for v in value) or "—"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_fmt(v, digits)}" for k, v in value.items()) or "—"
    return str(value)


def _config_value(value: Any) -> str:
    """A config value as the user wrote it: ``0.001``, ``1e-05``, ``a, b``, ``units=256``."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return ", ".join(_config_value(v) for v in value) or "—"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_config_value(v)}" for k, v in value.items()) or "—"
    return repr(value) if isinstance(value, float) else str(value)


def _img(data: bytes, alt: str, cls: str = "fig", mime: str = "image/png") -> str:
    return f'<img class="{cls}" alt="{_e(alt)}" src="{_png_uri(data, mime)}">'


# --------------------------------------------------------------------------- sections


def _summary_cards(run: RunInfo) -> str:
    m, ev = run.metrics, run.evaluation or {}
    cards = []
    if m.get("best_val_accuracy") is not None:
        cards.append((f"{m['best_val_accuracy']:.1%}", f"best val accuracy (epoch {m.get('best_epoch', '?')})"))
    if ev.get("accuracy") is not None:
        cards.append((f"{ev['accuracy']:.1%}", f"accuracy of {RunDir.MODEL} on {ev.get('num_images', '?')} images"))
    if ev.get("macro_avg"):
        cards.append((f"{ev['macro_avg']['f1']:.3f}", "macro F1"))
    if ev.get("top_k_accuracy") is not None:
        cards.append((f"{ev['top_k_accuracy']:.1%}", f"top-{ev.get('top_k')} accuracy"))
    if m.get("train_time_s") is not None:
        cards.append((f"{m['train_time_s']:.1f} s", f"training time, {m.get('epochs_run', len(run.epochs))} epochs"))
    if m.get("num_train") is not None:
        cards.append((f"{m['num_train']} / {m.get('num_val', '?')}", f"train / val images, {len(run.classes)} classes"))
    return (
        '<div class="cards">'
        + "".join(f'<div class="card"><div class="v">{_e(v)}</div><div class="k">{_e(k)}</div></div>' for v, k in cards)
        + "</div>"
    )


def _config_section(run: RunInfo) -> str:
    items = [(k, v) for k, v in run.config.items() if k != "tlkit"]
    third = math.ceil(len(items) / 3)
    tables = []
    for chunk in (items[:third], items[third : 2 * third], items[2 * third :]):
        rows = "".join(f'<tr><td>{_e(k)}</td><td class="mono">{_e(_config_value(v))}</td></tr>' for k, v in chunk)
        tables.append(f"<table>{rows}</table>")
    provenance = run.config.get("tlkit") or {}
    made = ", ".join(f"{k} {v}" for k, v in provenance.items())
    return (
        '<section id="config"><h2>Configuration</h2>'
        f'<div class="kv">{"".join(tables)}</div>'
        f'<p class="note">Reproduce: <code>tlkit train --config {_e(RunDir(run.run_dir).config_path)}</code>'
        + (f" · made by tlkit {_e(made)}" if made else "")
        + "</p></section>"
    )


def _dataset_section(run: RunInfo) -> str:
    parts = ['<section id="dataset"><h2>Dataset</h2>']
    root = run.config.get("data")
    scan = None
    if root and Path(root).is_dir():
        try:
            scan = scan_for_config(run.config)  # class folders, or the run's --labels CSV
        except TlkitError as exc:
            parts.append(f'<p class="note warn">Cannot read the data folder: {_e(exc)}</p>')
    else:
        parts.append(
            f'<p class="note warn">The data folder {_e(root)} is not available here: '
            "class counts and sample images are not shown.</p>"
        )
    if scan is None:
        m = run.metrics
        parts.append(
            f"<p>{_e(len(run.classes))} classes: {_e(', '.join(run.classes))}; "
            f"{_e(m.get('num_train', '?'))} training and {_e(m.get('num_val', '?'))} validation images.</p>"
        )
        return "".join(parts) + "</section>"

    train, val = scan.class_counts("train"), scan.class_counts("val")
    most = max(list(train.values()) + [1])
    parts.append(
        f'<p><span class="mono">{_e(scan.root)}</span> — {len(scan.classes)} classes, '
        f"{len(scan.train)} training and {len(scan.val)} validation images "
        f"(validation: {_e(scan.val_source)}).</p>"
    )
    rows = []
    for label, name in enumerate(scan.classes):
        thumbs = []
        if label < _MAX_SAMPLE_CLASSES:
            files = [scan.train.files[i] for i in scan.train.indices_of(label)]
            step = max(1, len(files) // _SAMPLES_PER_CLASS)
            for path in files[::step][:_SAMPLES_PER_CLASS]:
                data = _jpeg_thumb(path)
                if data is not None:
                    thumbs.append(
                        f'<img alt="{_e(path.name)}" title="{_e(path.name)}" src="{_png_uri(data, "image/jpeg")}">'
                    )
        rows.append(
            f'<tr><td class="cls">{_e(name)}</td><td class="num">{train[name]}</td>'
            f'<td><span class="bar" style="width:{110 * train[name] / most:.0f}px"></span></td>'
            f'<td class="num">{val[name]}</td><td class="samples">{"".join(thumbs)}</td></tr>'
        )
    parts.append(
        '<table class="dataset"><tr><th>class</th><th class="num">train</th><th></th>'
        f'<th class="num">val</th><th>sample training images</th></tr>{"".join(rows)}</table>'
    )
    skipped = []
    if scan.skipped_hidden:
        skipped.append(f"{scan.skipped_hidden} hidden")
    if scan.skipped_other:
        skipped.append(f"{scan.skipped_other} non-image")
    if skipped:
        parts.append(f'<p class="note">Skipped {" and ".join(skipped)} files.</p>')
    if len(scan.classes) > _MAX_SAMPLE_CLASSES:
        parts.append(f'<p class="note">Samples of the first {_MAX_SAMPLE_CLASSES} classes shown.</p>')
    return "".join(parts) + "</section>"


def _curves_section(run: RunInfo) -> str:
    parts = ['<section id="curves"><h2>Training curves</h2>']
    if not run.history:
        return "".join(parts) + f'<p class="note">No {RunDir.HISTORY}: the run recorded no epochs.</p></section>'
    spans = []
    for stage in dict.fromkeys(run.stages):
        epochs = [e for e, s in zip(run.epochs, run.stages) if s == stage]
        spans.append(
            f"{_e(stage)} (epochs {epochs[0]}–{epochs[-1]})" if len(epochs) > 1 else f"{_e(stage)} (epoch {epochs[0]})"
        )
    parts.append(f"<p>Stages: {', '.join(spans)}. Best epoch: {_e(run.best_epoch)}.</p>")
    title = f"{run.config.get('base', '?')} + {run.config.get('head', '?')}"
    metrics = ["accuracy", "loss"] + sorted(
        k
        for k in run.history
        if not k.startswith("val_") and f"val_{k}" in run.history and k not in ("accuracy", "loss")
    )
    figures = []
    for metric in metrics:
        fig = history_figure(
            run.history, metric, title=title, stages=run.stages, best_epoch=run.best_epoch, epochs=run.epochs
        )
        if fig is not None:
            figures.append(_img(figure_png(fig), f"{metric} per epoch"))
    parts.append(f'<div class="figs">{"".join(figures)}</div>')
    columns = ["epoch", "stage"] + list(run.history)
    header = "".join(f'<th class="num">{_e(c)}</th>' if c not in ("stage",) else f"<th>{_e(c)}</th>" for c in columns)
    rows = []
    for i, epoch in enumerate(run.epochs):
        cells = [f'<td class="num">{epoch}</td>', f"<td>{_e(run.stages[i])}</td>"]
        cells += [f'<td class="num">{_fmt(run.history[c][i])}</td>' for c in run.history]
        rows.append(f"<tr>{''.join(cells)}</tr>")
    parts.append(
        f"<details><summary>History table ({len(run.epochs)} epochs)</summary>"
        f"<table><tr>{header}</tr>{''.join(rows)}</table></details>"
    )
    return "".join(parts) + "</section>"


def _metrics_section(run: RunInfo, eval_note: str | None) -> str:
    m, ev = run.metrics, run.evaluation
    parts = ['<section id="metrics"><h2>Metrics</h2><div class="kv">']
    training = [
        ("best epoch", m.get("best_epoch")),
        ("best val accuracy", m.get("best_val_accuracy")),
        ("val loss at best epoch", m.get("best_val_loss")),
        ("epochs run", m.get("epochs_run")),
        ("saved model", m.get("saved_model")),
        ("training time (s)", m.get("train_time_s")),
        ("training path", m.get("training_path")),
        ("images (train / val)", f"{m.get('num_train', '?')} / {m.get('num_val', '?')}"),
    ]
    rows = "".join(f"<tr><td>{_e(k)}</td><td>{_e(_fmt(v))}</td></tr>" for k, v in training if v is not None)
    parts.append(f"<div><h3>Training ({RunDir.METRICS})</h3><table>{rows}</table></div>")
    if ev:
        summary = [
            ("data", ev.get("split") or ev.get("data")),
            ("images", ev.get("num_images")),
            ("accuracy", ev.get("accuracy")),
            (f"top-{ev.get('top_k')} accuracy", ev.get("top_k_accuracy")),
            ("log loss", ev.get("log_loss")),
            ("mistakes", ev.get("num_mistakes")),
        ]
        if ev.get("skipped_images"):
            summary.append(("unreadable images skipped", len(ev["skipped_images"])))
        rows = "".join(f"<tr><td>{_e(k)}</td><td>{_e(_fmt(v))}</td></tr>" for k, v in summary)
        evaluation_file = f"{RunDir.EVALUATION}/{RunDir.EVALUATION_FILES['metrics']}"
        parts.append(f"<div><h3>Evaluation of {RunDir.MODEL} ({evaluation_file})</h3><table>{rows}</table></div>")
    parts.append("</div>")
    if ev and ev.get("per_class"):
        class_rows = []
        for name, c in ev["per_class"].items():
            class_rows.append(
                f'<tr><td>{_e(name)}</td><td class="num">{c["precision"]:.3f}</td><td class="num">{c["recall"]:.3f}</td>'
                f'<td class="num">{c["f1"]:.3f}</td><td><span class="bar f1" style="width:{100 * c["f1"]:.0f}px"></span></td>'
                f'<td class="num">{c["support"]}</td></tr>'
            )
        total = sum(c["support"] for c in ev["per_class"].values())
        for label, key in (("macro avg", "macro_avg"), ("weighted avg", "weighted_avg")):
            a = ev.get(key) or {}
            if a:
                class_rows.append(
                    f'<tr class="avg"><td>{label}</td><td class="num">{a["precision"]:.3f}</td>'
                    f'<td class="num">{a["recall"]:.3f}</td><td class="num">{a["f1"]:.3f}</td><td></td>'
                    f'<td class="num">{total}</td></tr>'
                )
        parts.append(
            '<h3>Per class</h3><table><tr><th>class</th><th class="num">precision</th>'
            '<th class="num">recall</th><th class="num">F1</th><th></th><th class="num">support</th></tr>'
            f"{''.join(class_rows)}</table>"
        )
        for note in ev.get("notes") or []:
            parts.append(f'<p class="note">{_e(note)}</p>')
    else:
        parts.append(
            f'<p class="note">{_e(eval_note or "Not evaluated.")} '
            f"Run <code>tlkit evaluate {_e(run.run_dir)}</code> for per-class metrics.</p>"
        )
    return "".join(parts) + "</section>"


def _eval_image(run: RunInfo, key: str) -> bytes | None:
    """An evaluation figure (``key`` of ``RunDir.EVALUATION_FILES``): where the evaluation wrote it, else in the run."""
    ev = run.evaluation or {}
    in_run = RunDir(run.run_dir).evaluation_dir / RunDir.EVALUATION_FILES[key]
    candidates = [Path(p) for p in [(ev.get("files") or {}).get(key)] if p] + [in_run]
    for path in candidates:
        if path.is_file():
            return path.read_bytes()
    return None


def _confusion_section(run: RunInfo) -> str:
    parts = ['<section id="confusion"><h2>Confusion matrix</h2>']
    ev = run.evaluation
    if ev and ev.get("multi_label"):
        note = "A multi-label run has no confusion matrix: see the per-label table."
        return "".join(parts) + f'<p class="note">{note}</p></section>'
    data = _eval_image(run, "confusion_matrix")
    if data is None and ev and ev.get("confusion_matrix"):
        cm = ev["confusion_matrix"]
        data = figure_png(confusion_figure(cm["counts"], cm["labels"]))
    if data is None:
        return "".join(parts) + '<p class="note">Not evaluated.</p></section>'
    parts.append(
        '<p class="note">Rows: true class; columns: predicted class; colour: fraction of the true '
        "class (each row sums to 100%).</p>"
    )
    parts.append(_img(data, "confusion matrix", cls="wide"))
    return "".join(parts) + "</section>"


def _mistakes_section(run: RunInfo, explanations: tuple[list[dict[str, Any]], str | None] | None = None) -> str:
    parts = ['<section id="mistakes"><h2>Mistakes</h2>']
    ev = run.evaluation
    if not ev:
        return "".join(parts) + '<p class="note">Not evaluated.</p></section>'
    mistakes = ev.get("mistakes") or []
    count = ev.get("num_mistakes", len(mistakes))
    if not count:
        return (
            "".join(parts)
            + f"<p>No mistakes: all {_e(ev.get('num_images'))} images are classified correctly.</p></section>"
        )
    parts.append(
        f"<p>{_e(count)} of {_e(ev.get('num_images'))} images are misclassified; the most confident mistakes first.</p>"
    )
    data = _eval_image(run, "mistakes")
    if data is not None and mistakes:
        parts.append(_img(data, "most confident mistakes", cls="wide"))
    if mistakes:
        rows = "".join(
            f'<tr><td class="mono">{_e(m["path"])}</td><td>{_e(m["true"])}</td><td>{_e(m["predicted"])}</td>'
            f'<td class="num">{m["probability"]:.3f}</td></tr>'
            for m in mistakes[:25]
        )
        parts.append(
            f"<details><summary>Mistakes as a table (first {min(25, len(mistakes))})</summary><table>"
            '<tr><th>image</th><th>true</th><th>predicted</th><th class="num">p</th></tr>'
            f"{rows}</table></details>"
        )
    if explanations is not None:
        parts.append(_explanations_block(*explanations))
    return "".join(parts) + "</section>"


def _explanations_block(items: list[dict[str, Any]], note: str | None) -> str:
    """The "Why these mistakes" sub-section: Grad-CAM overlays (``jpeg`` bytes) of the most confident mistakes."""
    parts = ['<div id="explanations"><h3>Why these mistakes (Grad-CAM)</h3>']
    if not items:
        return "".join(parts) + f'<p class="note">Not shown: {_e(note or "no explanations")}.</p></div>'
    parts.append(
        f'<p class="note">Where the model found the class it wrongly predicted ({_e(items[0].get("layer", ""))}): '
        "red regions raised its score most, blue ones not at all. "
        '<code>tlkit explain RUN_DIR IMAGES --output DIR</code> explains any image.</p><div class="gradcam">'
    )
    for item in items:
        parts.append(
            f'<figure><img alt="Grad-CAM of {_e(Path(item["path"]).name)}" title="{_e(item["path"])}" '
            f'src="{_png_uri(item["jpeg"], "image/jpeg")}"><figcaption>true: {_e(item["true"])}<br>'
            f"predicted: {_e(item['predicted'])}<br>p = {item['probability']:.2f}"
            + ("<br>(no evidence found)" if item.get("flat") else "")
            + "</figcaption></figure>"
        )
    return "".join(parts) + "</div></div>"


# --------------------------------------------------------------------------- the report


def render_report(
    run: RunInfo, *, eval_note: str | None = None, explanations: tuple[list[dict[str, Any]], str | None] | None = None
) -> str:
    """The report of ``run`` as one HTML string (see the module docstring).

    ``explanations`` is :func:`tlkit.evaluation.gradcam.explain_mistakes`'s ``(items, note)``, shown under the mistakes.
    """
    title = f"{run.config.get('base', '?')} + {run.config.get('head', '?')}"
    nav = "".join(f'<a href="#{s}">{s}</a>' for s in SECTIONS)
    body = "".join(
        [
            _config_section(run),
            _dataset_section(run),
            _curves_section(run),
            _metrics_section(run, eval_note),
            _confusion_section(run),
            _mistakes_section(run, explanations),
        ]
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>tlkit report — {_e(run.name)}</title><style>{_CSS}</style></head><body>"
        f'<header><h1>{_e(title)}</h1><div class="sub">tlkit run <span class="mono">{_e(run.run_dir)}</span>'
        f"</div><nav>{nav}</nav></header><main>{_summary_cards(run)}{body}</main>"
        f"<footer>Generated by tlkit {_e(__version__)} on {_e(time.strftime('%Y-%m-%d %H:%M'))}. "
        "Self-contained: no scripts, no network.</footer></body></html>\n"
    )


def write_report(
    run_dir: str | Path, *, evaluate: bool = True, model: Any = None, probabilities: Any = None, explain: bool = True
) -> Path:
    """Write ``<run>/report.html`` (self-contained) and return its path.

    Args:
        run_dir: a run directory made by ``tlkit train``.
        evaluate: evaluate the model on the run's validation data first if the
            run has no evaluation yet (if that fails, e.g. the data folder is
            gone, the report says why and shows the training metrics).
        model: the run's already loaded ``keras.Model`` (saves a reload; optional).
        probabilities: the model's probabilities already known for some validation
            images, by path (see :func:`tlkit.evaluation.evaluate.evaluate`).
        explain: show Grad-CAM overlays of the most confident mistakes (needs the
            model and the images; see :func:`tlkit.evaluation.gradcam.explain_mistakes`).

    Raises:
        TlkitError: ``run_dir`` is not a run directory.
    """
    run = read_run(run_dir)
    eval_note = None
    if run.evaluation is None:
        if not evaluate:
            eval_note = "Not evaluated yet."
        elif not RunDir(run.run_dir).has_model():
            eval_note = f"No {RunDir.MODEL} (the run did not finish), so it was not evaluated."
        else:
            try:
                if model is None and explain:  # loaded once, for the evaluation and the explanations
                    model = load_keras_model(RunDir(run.run_dir).model_path)
                evaluation.evaluate(run.run_dir, model=model, probabilities=probabilities, track=False)
                run = read_run(run.run_dir)
            except TlkitError as exc:
                eval_note = f"Evaluation failed: {exc}"
    explanations = _explain_mistakes(run, model) if explain else None
    return RunDir(run.run_dir).write_report(render_report(run, eval_note=eval_note, explanations=explanations))


def _explain_mistakes(run: RunInfo, model: Any) -> tuple[list[dict[str, Any]], str | None] | None:
    """Grad-CAM of up to :data:`_EXPLAINED_MISTAKES` mistakes (None when there are none to explain).

    Kept in ``evaluation/explained_mistakes.json``, keyed by the evaluation, so a later report
    shows them without loading the model; a model passed in (training's) is always explained afresh.
    """
    ev = run.evaluation or {}
    mistakes = ev.get("mistakes") or []
    if not mistakes or ev.get("multi_label"):
        return None
    run_dir = RunDir(run.run_dir)
    key = {"evaluation": ev.get("created"), "mistakes": [str(m.get("path")) for m in mistakes[:_EXPLAINED_MISTAKES]]}
    if model is None and run_dir.explained_mistakes_path.is_file():
        try:
            saved = json.loads(run_dir.explained_mistakes_path.read_text(encoding="utf-8"))
            if saved.get("key") == key:
                items = [{**item, "jpeg": base64.b64decode(item["jpeg"])} for item in saved["items"]]
                return items, saved.get("note")
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            pass  # unreadable: explain again
    if not run_dir.has_model():
        return [], f"no {RunDir.MODEL}"

    found, note = explain_mistakes(run.run_dir, mistakes, limit=_EXPLAINED_MISTAKES, model=model)
    items = []
    for item in found:
        buffer = io.BytesIO()
        Image.fromarray(item["overlay"]).save(buffer, format="JPEG", quality=85)
        items.append({k: v for k, v in item.items() if k != "overlay"} | {"jpeg": buffer.getvalue()})
    saved = [{**item, "jpeg": base64.b64encode(item["jpeg"]).decode("ascii")} for item in items]
    try:
        write_json(run_dir.explained_mistakes_path, {"key": key, "note": note, "items": saved})
    except OSError:
        pass  # a read-only run still gets its report
    return items, note
