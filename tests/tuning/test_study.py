"""``tlkit.tune`` end to end on a tiny folder: the study's trials, its features computed once, the
best configuration scored once on val, resuming (also after SIGKILL), two processes on one storage,
and one-line refusals of a bad search space before any work."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import tlkit
from tests.support import CLASS_COLORS
from tlkit import TlkitError
from tlkit.api import resolve_head
from tlkit.testing import write_images
from tlkit.tuning import study as study_module
from tlkit.tuning import trial as trial_module

FAST = {"base": "mobilenet_v2", "weights": "none", "image_size": 32, "engine": "tensorflow", "epochs": 2}
SEARCH = ["lr=1e-4..1e-2:log", "head=linear,dense256"]
ROOT = Path(__file__).resolve().parents[2]


class Trials(tlkit.TrainingObserver):
    def __init__(self) -> None:
        self.finished: list = []

    def trial_finished(self, trial, best) -> None:
        self.finished.append((trial, best))


@pytest.fixture
def data(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("TLKIT_CACHE_DIR", str(tmp_path / "cache"))  # a fresh cache: the features are computed here
    root = tmp_path / "data"
    for k, (name, color) in enumerate(CLASS_COLORS.items()):
        write_images(root / "train" / name, 8, color, size=32, seed=k)
        write_images(root / "val" / name, 3, color, size=32, seed=10 + k)
    return root


def test_a_base_search_tries_every_base_once_first(data, tmp_path, monkeypatch):
    passes = []
    compute = trial_module.compute_features
    monkeypatch.setattr(study_module, "compute_features", lambda *a: passes.append(a[0].base) or compute(*a))
    result = tlkit.tune(
        data=str(data),
        search=["base=mobilenet_v2,mobilenet", "lr=1e-3..1e-2:log"],
        trials=2,
        output=str(tmp_path / "tune"),
        verbose=False,
        **{**FAST, "epochs": 1},
    )
    assert [t.params["base"] for t in result.trials] == ["mobilenet_v2", "mobilenet"]
    assert sorted(passes) == ["mobilenet", "mobilenet_v2"], "each base's features once"


def finished(storage: str, name: str) -> list:
    import optuna

    study = optuna.load_study(study_name=name, storage=storage)
    return [t for t in study.get_trials() if t.state.name in ("COMPLETE", "PRUNED")]


def test_a_tiny_study_end_to_end(data, tmp_path, monkeypatch):
    passes, scored = [], []
    compute, score = trial_module.compute_features, study_module.score_on_val
    monkeypatch.setattr(study_module, "compute_features", lambda *a: passes.append(a[0].base) or compute(*a))
    monkeypatch.setattr(study_module, "score_on_val", lambda *a: scored.append(a[0]) or score(*a))
    observer = Trials()
    result = tlkit.tune(
        data=str(data), search=SEARCH, trials=4, output=str(tmp_path / "tune"), observer=observer, **FAST
    )
    assert [t.number for t in result.trials] == [0, 1, 2, 3]
    assert all(t.state == "complete" and 0 <= t.value <= 1 and t.epochs == 2 for t in result.trials)
    assert all(set(t.params) == {"lr", "head"} for t in result.trials)
    assert [t.number for t, _ in observer.finished] == [0, 1, 2, 3]
    assert observer.finished[-1][1] == result.best
    assert result.best is not None and result.best.value == max(t.value for t in result.trials)
    best = result.best_config
    assert best is not None and best.head == result.best.params["head"] and best.lr == result.best.params["lr"]
    best.validate()
    assert best.head_params == resolve_head(best.head, {})[1]  # a complete, resolved configuration
    assert passes == ["mobilenet_v2"], "the features are computed once for the whole study"
    assert [c.head for c in scored] == [best.head, result.config.head], "best and default scored once each on val"
    assert 0 <= result.best_val_accuracy <= 1 and 0 <= result.default_val_accuracy <= 1
    assert "hold-out of train" in result.objective
    assert result.folder is not None and result.folder.parent == (tmp_path / "tune").resolve()
    assert (result.folder / "study.json").is_file() and (result.folder / "study.db").is_file()
    assert result.storage == f"sqlite:///{result.folder / 'study.db'}"
    assert len(finished(result.storage, result.study_name)) == 4


def test_resume_continues_to_the_total(data, tmp_path):
    first = tlkit.tune(data=str(data), search=SEARCH, trials=2, output=str(tmp_path / "tune"), verbose=False, **FAST)
    assert len(first.trials) == 2
    again = tlkit.tune(resume=first.folder, trials=4, verbose=False)
    assert again.folder == first.folder and [t.number for t in again.trials] == [0, 1, 2, 3]
    assert [(t.params, t.value) for t in again.trials[:2]] == [(t.params, t.value) for t in first.trials]
    assert len(finished(again.storage, again.study_name)) == 4
    with pytest.raises(TlkitError, match="--resume"):
        tlkit.tune(resume=first.folder, search=SEARCH, verbose=False)


def _script(data: Path, output: Path, trials: int, **extra) -> str:
    options = dict(FAST, data=str(data), search=SEARCH, trials=trials, output=str(output), verbose=False, **extra)
    return textwrap.dedent(f"""
        import tlkit
        tlkit.tune(**{options!r})
    """)


def test_two_processes_share_one_storage(data, tmp_path):
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    script = _script(data, tmp_path / "tune", 4, storage=storage, study="shared")
    procs = [
        subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stderr=subprocess.PIPE, text=True) for _ in range(2)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]
    done = finished(storage, "shared")
    assert len(done) == 4, [(t.number, t.state.name) for t in done]
    assert len({t.number for t in done}) == 4


def test_a_killed_study_resumes_with_its_finished_trials(data, tmp_path):
    script = _script(data, tmp_path / "tune", 6, study="killed")
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        done: list = []
        while time.monotonic() < deadline and proc.poll() is None:
            dbs = list((tmp_path / "tune").glob("*-killed/study.db"))
            if dbs:
                try:
                    done = finished(f"sqlite:///{dbs[0]}", "killed")
                except Exception:  # noqa: BLE001 - the study is being created
                    done = []
                if len(done) >= 2:
                    break
            time.sleep(0.2)
        assert proc.poll() is None, "the study ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    before = {t.number: t.value for t in finished(f"sqlite:///{dbs[0]}", "killed")}
    assert len(before) >= 2
    result = tlkit.tune(resume=dbs[0].parent, trials=6, verbose=False)
    after = {t.number: t.value for t in result.trials if t.state in ("complete", "pruned")}
    assert len(after) == 6
    assert all(after[n] == value for n, value in before.items()), "a finished trial was lost or changed"


@pytest.mark.parametrize(
    ("search", "words"),
    [
        (["lrr=1e-4..1e-2"], "did you mean 'lr'"),
        (["data=a,b"], "not an option a trial can vary"),
        (["lr"], "expected NAME=LOW..HIGH"),
        (["lr=1e-2..1e-4"], "must be below"),
        (["lr=0..1e-2:log"], "low end > 0"),
        (["lr=-1..1"], "--lr must be > 0"),
        (["lr=a..1"], "'a' is not a number"),
        (["lr=1e-4..1e-2:lag"], "unknown suffix"),
        (["batch_size=8..32.5"], "not an integer"),
        (["head=linear,dense265"], "did you mean 'dense256'"),
        (["optimizer=adam,adma"], "unknown optimizer 'adma'"),
        (["base=mobilenet_v2"], "two values or more"),
        (["head.widht=1..3"], "declares a parameter 'widht'"),
        (["head.dropout=0..1.5"], "head parameter 'dropout' must be <= 0.99"),
        (["lr=1e-4..1e-2", "lr=1e-3,1e-2"], "searched twice"),
    ],
)
def test_a_bad_search_entry_is_one_line_before_any_work(data, tmp_path, monkeypatch, search, words):
    def no_features(*args):
        raise AssertionError("features were computed before the space was checked")

    monkeypatch.setattr(study_module, "compute_features", no_features)
    with pytest.raises(TlkitError) as caught:
        tlkit.tune(data=str(data), search=search, trials=2, output=str(tmp_path / "tune"), verbose=False, **FAST)
    message = str(caught.value)
    assert "\n" not in message and words in message and search[-1].split("=")[0] in message, message
    assert not (tmp_path / "tune").exists()
