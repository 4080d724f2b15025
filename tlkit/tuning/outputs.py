"""What a study leaves in its folder: ``trials.csv``, ``best.toml``, two plots and ``report.html``.

:func:`write_outputs` runs once, at the end of :func:`tlkit.tune`, into the study folder (which
already holds the study's SQLite file); each file is written atomically (:mod:`tlkit.io.files`), so
a reader never sees half of one, and rerunning it (a resumed study) replaces them whole.

* ``trials.csv``: one row per trial, in trial order: ``number, state, value, seconds, epochs``, then
  one column per search parameter (the search's own names: ``lr``, ``head.dropout``, ``base``...;
  empty where a trial did not reach the parameter).
* ``best.toml``: the best trial's complete configuration, a ``tlkit train --config`` file, with a
  ``[tlkit]`` provenance table naming the study, the trial and its hold-out value.
* ``history.png``: every trial's hold-out value by trial number, the best so far as a step line,
  pruned trials at the last value the pruner saw.
* ``importance.png``: Optuna's parameter importances (skipped, with a note, with fewer than two
  complete trials or a single parameter).
* ``report.html``: one self-contained page (no scripts, no network; sections :data:`SECTIONS`).

The plots are drawn here with matplotlib in tlkit's figure style (:mod:`tlkit.evaluation.figures`)
rather than with ``optuna.visualization.matplotlib``: those use another style, fractional trial
numbers on the axis and leave pruned trials out, which on a study of 2–4 trials says little.
"""

from __future__ import annotations

import csv
import io
import math
import shlex
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tlkit.config.options import to_toml
from tlkit.errors import TlkitError
from tlkit.evaluation.figures import COLORS, STYLE, figure_png
from tlkit.evaluation.html import PAGE_CSS, data_uri, escape
from tlkit.io.files import atomic_path, write_text
from tlkit.io.rundir import RunDir
from tlkit.io.urls import mask_password
from tlkit.tuning.result import TrialRecord, TuneResult
from tlkit.version import __version__

__all__ = [
    "BEST_TOML",
    "HISTORY_PNG",
    "IMPORTANCE_PNG",
    "REPORT_HTML",
    "SECTIONS",
    "TRIALS_CSV",
    "TRIAL_COLUMNS",
    "display_storage",
    "search_parameters",
    "train_command",
    "trial_rows",
    "tune_html",
    "write_outputs",
]

TRIALS_CSV = "trials.csv"
BEST_TOML = "best.toml"
HISTORY_PNG = "history.png"
IMPORTANCE_PNG = "importance.png"
REPORT_HTML = RunDir.REPORT  # the same name as a run's and an audit's report

TRIAL_COLUMNS = ("number", "state", "value", "seconds", "epochs")
"""The first columns of ``trials.csv``; one column per search parameter follows."""

SECTIONS = ("summary", "best", "trials", "plots", "train")
"""The report's sections (element ids), in order."""

_STATE_ORDER = {"complete": 0, "pruned": 1, "running": 2, "failed": 3}
_STATE_COLORS = {"complete": "var(--good)", "pruned": "var(--muted)", "failed": "var(--bad)", "running": "var(--fg)"}


# --------------------------------------------------------------------------- the whole folder


def write_outputs(result: TuneResult, study: Any = None) -> None:
    """Write the study's files into ``result.folder``; fill ``result.files`` and ``result.train_command``.

    ``study`` is the ``optuna.Study`` (its parameter importances feed ``importance.png``; None: it is
    loaded from ``result.storage``).  What cannot be drawn is skipped with a line in ``result.notes``, shown in the
    report.
    """
    if result.folder is None:
        raise TlkitError("the study has no folder to write its outputs into")
    folder = Path(result.folder)
    files: dict[str, Path] = {}

    files["trials_csv"] = folder / TRIALS_CSV
    _write_trials_csv(result, files["trials_csv"])

    if result.best is not None and result.best_config is not None:
        files["best_toml"] = folder / BEST_TOML
        write_text(files["best_toml"], to_toml(result.best_config, _provenance(result)))
        result.train_command = train_command(files["best_toml"])
    else:
        result.train_command = ""
        _note(result, "no trial completed: no best.toml and no train command")

    history = history_figure(result)
    if history is None:
        _note(result, "no trial has a hold-out value yet: no optimisation-history plot")
    else:
        files["history_plot"] = _save(history, folder / HISTORY_PNG)

    importances, why_not = parameter_importances(result, study)
    if importances:
        files["importance_plot"] = _save(importance_figure(importances, result), folder / IMPORTANCE_PNG)
    else:
        _note(result, f"no parameter-importance plot: {why_not}")

    files["report"] = folder / REPORT_HTML
    result.files = files  # before the page, which lists them
    write_text(files["report"], tune_html(result))


def _note(result: TuneResult, text: str) -> None:
    if text not in result.notes:
        result.notes.append(text)


def train_command(best_toml: Path) -> str:
    """The exact command that trains the best configuration."""
    return shlex.join(["tlkit", "train", "--config", str(best_toml)])


def display_storage(url: str) -> str:
    """The storage URL with any password masked (``postgresql://user:***@host/db``)."""
    return mask_password(url)


def _provenance(result: TuneResult) -> dict[str, Any]:
    best = result.best
    assert best is not None
    provenance: dict[str, Any] = {
        "version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "tuned_by": "tlkit tune",
        "study": result.study_name,
        "storage": display_storage(result.storage),
        "trial": best.number,
    }
    if best.value is not None:
        provenance["holdout_value"] = best.value
    if result.objective:
        provenance["objective"] = result.objective
    provenance["searched"] = {name: _toml_value(value) for name, value in best.params.items()}
    return provenance


def _toml_value(value: Any) -> Any:
    return value if isinstance(value, (str, int, float, bool)) else str(value)


# --------------------------------------------------------------------------- trials.csv


def search_parameters(result: TuneResult) -> list[str]:
    """The searched parameters' names: the search space's order, then any other a trial recorded."""
    names = [entry.split("=", 1)[0].strip() for entry in result.space if "=" in entry]
    seen = dict.fromkeys(n for n in names if n)
    for trial in result.trials:
        for name in sorted(trial.params):
            seen.setdefault(name)
    return list(seen)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(value)
    return str(value)


def trial_rows(result: TuneResult) -> list[dict[str, str]]:
    """The rows of ``trials.csv`` in trial order (columns :data:`TRIAL_COLUMNS` + the parameters)."""
    params = search_parameters(result)
    rows = []
    for trial in sorted(result.trials, key=lambda t: t.number):
        row = {
            "number": str(trial.number),
            "state": trial.state,
            "value": _cell(trial.value),
            "seconds": f"{trial.seconds:.3f}",
            "epochs": str(trial.epochs),
        }
        row.update({name: _cell(trial.params.get(name)) for name in params})
        rows.append(row)
    return rows


def _write_trials_csv(result: TuneResult, path: Path) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=[*TRIAL_COLUMNS, *search_parameters(result)], lineterminator="\n")
    writer.writeheader()
    writer.writerows(trial_rows(result))
    write_text(path, buffer.getvalue())


# --------------------------------------------------------------------------- plots


def _pyplot():
    import matplotlib  # lazy: matplotlib is slow to import; only drawing the study's plots needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # lazy: as above

    return plt


def _save(fig: Any, path: Path) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(figure_png(fig))
    return path


def _shown_value(trial: TrialRecord) -> float | None:
    """Where a trial sits on the history plot: its value, or (pruned) the last value the pruner saw."""
    if trial.state == "complete" and trial.value is not None and not math.isnan(trial.value):
        return trial.value
    if trial.state == "pruned" and trial.intermediate:
        last = trial.intermediate[-1]
        return None if math.isnan(last) else last
    return None


def history_figure(result: TuneResult) -> Any:
    """The optimisation history: hold-out value per trial, the best so far, pruned trials in grey; None
    when no trial has a value to show."""
    trials = sorted(result.trials, key=lambda t: t.number)
    shown = {t.number: y for t in trials if (y := _shown_value(t)) is not None}
    complete = [(t.number, shown[t.number]) for t in trials if t.state == "complete" and t.number in shown]
    pruned = [(t.number, shown[t.number]) for t in trials if t.state == "pruned" and t.number in shown]
    failed = sum(1 for t in trials if t.state == "failed")
    if not complete and not pruned:
        return None
    plt = _pyplot()
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(7, 4.2))
        if complete:
            xs, ys = zip(*complete, strict=True)
            ax.scatter(xs, ys, color=COLORS["train"], s=28, zorder=3, label="complete trial")
            best_x, best_y, running = [], [], -math.inf
            for x, y in complete:
                running = max(running, y)
                best_x.append(x)
                best_y.append(running)
            last = trials[-1].number
            if best_x[-1] < last:
                best_x.append(last)
                best_y.append(running)
            ax.step(best_x, best_y, where="post", color=COLORS["best"], label="best so far")
        if pruned:
            xs, ys = zip(*pruned, strict=True)
            ax.scatter(xs, ys, color=COLORS["boundary"], marker="x", s=30, zorder=3, label="pruned (last epoch seen)")
        if result.best is not None and result.best.value is not None:
            ax.scatter(
                [result.best.number],
                [result.best.value],
                s=130,
                facecolors="none",
                edgecolors=COLORS["best"],
                linewidths=2,
                zorder=4,
                label=f"best: trial {result.best.number}, {result.best.value:.4f}",
            )
        if failed:
            ax.plot([], [], " ", label=f"{failed} failed (not shown)")
        ax.set_title(f"Optimisation history — {result.study_name}")
        ax.set_xlabel("Trial")
        ax.set_ylabel("Hold-out value")
        ax.xaxis.get_major_locator().set_params(integer=True)
        numbers = [t.number for t in trials]
        ax.set_xlim(min(numbers) - 0.5, max(numbers) + 0.5)
        values = [y for _, y in complete + pruned]
        low, high = min(values), max(values)
        pad = max((high - low) * 0.12, 0.01)  # a flat history looks flat
        ax.set_ylim(low - pad, high + pad)
        ax.legend(loc="lower right")
        fig.tight_layout()
    return fig


def parameter_importances(result: TuneResult, study: Any) -> tuple[dict[str, float], str]:
    """Optuna's parameter importances over the complete trials, and why there are none when empty."""
    complete = sum(1 for t in result.trials if t.state == "complete")
    names = search_parameters(result)
    if complete < 2:
        return {}, f"it needs 2 complete trials, the study has {complete}"
    if len(names) < 2:
        return {}, "only one parameter was searched"
    if len({t.value for t in result.trials if t.state == "complete"}) < 2:
        return {}, "every complete trial has the same hold-out value"
    import optuna  # lazy: the engine has loaded it already; this keeps the module importable without it

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ExperimentalWarning and friends: not the user's concern
            importances = optuna.importance.get_param_importances(study or _load_study(result))
    except Exception as exc:  # noqa: BLE001 - a plot is not worth failing a finished study
        return {}, f"Optuna could not compute them ({type(exc).__name__}: {exc})"
    values = {str(k): float(v) for k, v in importances.items() if v is not None and not math.isnan(float(v))}
    if len(values) < 2:
        return {}, "fewer than 2 parameters varied across the complete trials"
    return values, ""


def _load_study(result: TuneResult) -> Any:
    """The study from its storage, when the caller passed none (``journal:PATH`` or an Optuna URL)."""
    import optuna  # lazy: as in parameter_importances

    storage: Any = result.storage
    if storage.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend  # lazy: as above

        storage = optuna.storages.JournalStorage(JournalFileBackend(str(Path(storage[len("journal:") :]).expanduser())))
    return optuna.load_study(study_name=result.study_name, storage=storage)


def importance_figure(importances: dict[str, float], result: TuneResult) -> Any:
    """Horizontal bars, most important on top, each labelled with its share."""
    plt = _pyplot()
    items = sorted(importances.items(), key=lambda kv: kv[1])
    complete = sum(1 for t in result.trials if t.state == "complete")
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(7, max(2.2, 0.9 + 0.45 * len(items))))
        names = [name for name, _ in items]
        values = [value for _, value in items]
        ax.barh(names, values, color=COLORS["train"], height=0.6)
        top = max(values) if max(values) > 0 else 1.0
        for y, value in enumerate(values):
            ax.text(value + top * 0.01, y, f"{value:.2f}", va="center", fontsize=9, color=COLORS["text"])
        ax.set_xlim(0, top * 1.15)
        ax.grid(axis="y", visible=False)
        ax.set_title(f"Parameter importance — {complete} complete trials")
        ax.set_xlabel("Importance for the hold-out value (Optuna; sums to 1)")
        fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- report.html

_TUNE_CSS = """
pre.cmd { background:#1d2330; color:#e8ecf3; padding:10px 14px; border-radius:6px; white-space:pre-wrap;
          overflow-wrap:anywhere; }
td.state { font-weight:600; }
tr.best td { background:#eef8ee; }
.delta { color:var(--muted); font-size:13px; }
"""


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return "—" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def _accuracy(value: float | None) -> str:
    return "not scored" if value is None else f"{value:.2%}"


def _counts(result: TuneResult) -> dict[str, int]:
    counts = dict.fromkeys(("complete", "pruned", "failed", "running"), 0)
    for trial in result.trials:
        counts[trial.state] = counts.get(trial.state, 0) + 1
    return counts


def _kv(rows: Sequence[tuple[str, str]]) -> str:
    """A two-column table; values are HTML already."""
    return "<table>" + "".join(f"<tr><td>{escape(k)}</td><td>{v}</td></tr>" for k, v in rows) + "</table>"


def _summary_section(result: TuneResult) -> str:
    counts = _counts(result)
    best, default = result.best_val_accuracy, result.default_val_accuracy
    cards = [
        (str(len(result.trials)), "trials"),
        (f"{counts['complete']} / {counts['pruned']} / {counts['failed']}", "complete / pruned / failed"),
        (_fmt(result.best.value) if result.best else "—", "best hold-out value"),
        (_accuracy(best), "val accuracy, best configuration"),
        (_accuracy(default), "val accuracy, default recipe"),
    ]
    comparison = "The best configuration and the default recipe were each scored once on val, after tuning."
    if best is not None and default is not None:
        comparison += f' <span class="delta">Difference: {(best - default) * 100:+.1f} points.</span>'
    rows = [
        ("study", escape(result.study_name)),
        ("storage", f'<span class="mono">{escape(display_storage(result.storage))}</span>'),
        ("folder", f'<span class="mono">{escape(result.folder or "")}</span>'),
        ("objective", escape(result.objective or "hold-out value (higher is better)")),
        ("search space", "<br>".join(f"<code>{escape(entry)}</code>" for entry in result.space) or "—"),
        (
            "trials",
            escape(
                f"{counts['complete']} complete, {counts['pruned']} pruned, {counts['failed']} failed"
                + (f", {counts['running']} running" if counts["running"] else "")
            ),
        ),
        ("best hold-out", escape(f"trial {result.best.number}: {_fmt(result.best.value)}") if result.best else "—"),
        ("val accuracy", escape(f"best configuration {_accuracy(best)} vs default recipe {_accuracy(default)}")),
    ]
    rows += [(key.replace("_", " "), escape(f"{seconds:.1f} s")) for key, seconds in result.timings.items()]
    for base, info in result.features.items():
        rows.append((f"features of {base}", escape(info if isinstance(info, str) else _features_text(info))))
    notes = "".join(f'<p class="note">{escape(note)}</p>' for note in result.notes)
    body = "".join(
        f'<div class="card"><div class="v">{escape(v)}</div><div class="k">{escape(k)}</div></div>' for v, k in cards
    )
    return (
        f'<section id="summary"><h2>Summary</h2><div class="cards">{body}</div>'
        f'<p class="note">{comparison}</p><div class="kv">{_kv(rows)}</div>{notes}</section>'
    )


def _features_text(info: Any) -> str:
    """How a base's features were obtained, in words: per split a cache hit, an entry assembled
    from other entries, or computed (with the engine and speed), then the seconds it took."""
    if not isinstance(info, dict):
        return str(info)
    parts = []
    for split in ("train", "val"):
        split_info = info.get(split)
        if not isinstance(split_info, dict):
            continue
        if split_info.get("derived_from"):
            how = f"assembled from {split_info['derived_from']} cached entr{'y' if split_info['derived_from'] == 1 else 'ies'}"
            if split_info.get("computed_images"):
                how += f", {split_info['computed_images']} image(s) computed"
        elif split_info.get("cache") == "hit":
            how = "read from the cache"
        else:
            speed = split_info.get("images_per_s")
            how = f"computed with {info.get('engine', '?')}" + (f" ({speed} images/s)" if speed else "")
        parts.append(f"{split}: {how}")
    if "seconds" in info:
        parts.append(f"{_fmt(info['seconds'])} s in all")
    return "; ".join(parts)


def _best_section(result: TuneResult) -> str:
    best = result.best
    if best is None:
        return '<section id="best"><h2>Best configuration</h2><p class="note">No trial completed.</p></section>'
    rows = [(name, f"<code>{escape(_fmt(best.params.get(name)))}</code>") for name in search_parameters(result)]
    intro = (
        f"Trial {best.number}: hold-out value {_fmt(best.value)} after {best.epochs} epochs "
        f"({best.seconds:.1f} s). Every other option is the base configuration's; "
        f"<code>{escape(BEST_TOML)}</code> holds them all."
    )
    return f'<section id="best"><h2>Best configuration</h2><p class="note">{intro}</p>{_kv(rows)}</section>'


def _sorted_trials(trials: Sequence[TrialRecord]) -> list[TrialRecord]:
    """Complete trials by value (best first), then pruned by the last value seen, then the rest."""

    def key(t: TrialRecord) -> tuple[int, float, int]:
        shown = _shown_value(t)
        return (_STATE_ORDER.get(t.state, 9), -(shown if shown is not None else -math.inf), t.number)

    return sorted(trials, key=key)


def _trials_section(result: TuneResult) -> str:
    params = search_parameters(result)
    head = "".join(
        f'<th class="num">{escape(c)}</th>'
        if c in ("number", "value", "epochs", "seconds")
        else f"<th>{escape(c)}</th>"
        for c in ("number", "state", "value", "epochs", "seconds", *params)
    )
    body = []
    best_number = result.best.number if result.best else None
    for t in _sorted_trials(result.trials):
        value = _fmt(t.value)
        if t.state == "pruned" and t.intermediate:
            value = f"({_fmt(t.intermediate[-1])})"
        cells = [
            f'<td class="num">{t.number}</td>',
            f'<td class="state" style="color:{_STATE_COLORS.get(t.state, "inherit")}">{escape(t.state)}</td>',
            f'<td class="num">{escape(value)}</td>',
            f'<td class="num">{t.epochs}</td>',
            f'<td class="num">{t.seconds:.1f}</td>',
            *(f"<td>{escape(_fmt(t.params.get(p)))}</td>" for p in params),
        ]
        cls = ' class="best"' if t.number == best_number else ""
        body.append(f"<tr{cls}>{''.join(cells)}</tr>")
    intro = (
        "Sorted by hold-out value, best first; a pruned trial shows (in brackets) the last value the pruner "
        f"saw. Every row is in <code>{escape(TRIALS_CSV)}</code>."
    )
    return (
        f'<section id="trials"><h2>All trials ({len(result.trials)})</h2><p class="note">{intro}</p>'
        f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></section>"
    )


def _plots_section(result: TuneResult) -> str:
    figures = []
    for key, alt in (("history_plot", "Optimisation history"), ("importance_plot", "Parameter importance")):
        path = result.files.get(key)
        if path is not None and Path(path).is_file():
            src = data_uri(Path(path).read_bytes())
            figures.append(f'<img class="fig" src="{src}" alt="{escape(alt)}">')
    missing = [n for n in result.notes if "plot" in n]
    notes = "".join(f'<p class="note">{escape(n)}</p>' for n in missing)
    return f'<section id="plots"><h2>Plots</h2><div class="figs">{"".join(figures)}</div>{notes}</section>'


def _train_section(result: TuneResult) -> str:
    if not result.train_command:
        return (
            '<section id="train"><h2>Train the best configuration</h2><p class="note">No trial completed.</p></section>'
        )
    return (
        '<section id="train"><h2>Train the best configuration</h2>'
        '<p class="note">A normal run directory with the best configuration, evaluated on val like any run:</p>'
        f'<pre class="cmd"><code>{escape(result.train_command)}</code></pre></section>'
    )


def tune_html(result: TuneResult) -> str:
    """The study's report as one self-contained HTML page (sections :data:`SECTIONS`)."""
    nav = "".join(f'<a href="#{s}">{s}</a>' for s in SECTIONS)
    sections = [
        _summary_section(result),
        _best_section(result),
        _trials_section(result),
        _plots_section(result),
        _train_section(result),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>tlkit tune — {escape(result.study_name)}</title><style>{PAGE_CSS}{_TUNE_CSS}</style></head><body>"
        f"<header><h1>Study {escape(result.study_name)}</h1>"
        f'<div class="sub">tlkit tune: {len(result.trials)} trials, {escape(result.objective or "hold-out value")}</div>'
        f"<nav>{nav}</nav></header><main>{''.join(sections)}</main>"
        f"<footer>Generated by tlkit {escape(__version__)} on {escape(time.strftime('%Y-%m-%d %H:%M'))}. "
        "Self-contained: no scripts, no network.</footer></body></html>\n"
    )
