"""Hostile and tired-user inputs to every command: each is one clear error, and nothing is lost.

Every row of ``CASES`` is a command line that must fail.  For each, the test checks that

* the exit status is non-zero and no traceback is shown;
* stderr is at most three lines, the first starting ``Error:``, and names the offending thing;
* the data folder is byte-identical, the shared finished run is byte-identical, and no run
  directory (empty or half-written) was left under ``--output``.

Command-line parse errors (a value of the wrong type) come from Typer as a usage box; those rows
(``usage=True``) check exit status 2, the option's name and the absence of a traceback instead.

The cases run in-process with Typer's ``CliRunner`` (no TensorFlow start-up per row); a real
process is used only where one is needed (two trainings at once).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tlkit.testing import make_image_folder

TINY = ["--base", "mobilenet_v2", "--weights", "none", "--image-size", "32", "--epochs", "1", "--batch-size", "4"]


# --------------------------------------------------------------------------- fixtures


def fingerprint(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` with the SHA-256 of its bytes (byte-identical, not just same mtime)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny data folder and one tiny finished run, shared (read-only) by every row."""
    import tlkit

    root = tmp_path_factory.mktemp("hostile")
    data = make_image_folder(root / "data", ("cat", "dog"), per_class=4, val_per_class=2, size=32)
    result = tlkit.train(
        data=str(data),
        base="mobilenet_v2",
        weights="none",
        image_size=32,
        epochs=1,
        batch_size=4,
        output=str(root / "runs"),
        verbose=False,
    )
    return data, result.run_dir


@dataclass
class Ctx:
    """What a row's setup gets: the shared data and run, and a fresh folder of its own."""

    data: Path
    run: Path
    tmp: Path

    @property
    def runs(self) -> Path:
        """The ``--output`` the train rows use (must stay empty)."""
        return self.tmp / "runs"

    def file(self, name: str, content: bytes | str = b"") -> Path:
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        return path

    def run_copy(self, damage: Callable[[Path], None] | None = None) -> Path:
        """A copy of the finished run, optionally damaged."""
        copy = self.tmp / "copy" / self.run.name
        shutil.copytree(self.run, copy)
        if damage is not None:
            damage(copy)
        return copy

    def data_copy(self, change: Callable[[Path], None]) -> Path:
        copy = self.tmp / "data-copy"
        shutil.copytree(self.data, copy)
        change(copy)
        return copy

    def train(self, *args: str | Path, data: Path | None = None) -> list[str]:
        return ["train", "--data", str(data or self.data), *TINY, "--output", str(self.runs), *map(str, args)]


def _write(path: Path, text: bytes | str) -> None:
    path.write_bytes(text.encode() if isinstance(text, str) else text)


def _lambda_model(path: Path, marker: Path) -> Path:
    """A .keras file whose Lambda layer would create ``marker`` if its code ever ran."""
    import keras

    code = f"lambda x: (open({str(marker)!r}, 'w').close(), x)[1]"
    inputs = keras.Input((32, 32, 3))
    outputs = keras.layers.Dense(2, activation="softmax")(
        keras.layers.GlobalAveragePooling2D()(keras.layers.Lambda(eval(code))(inputs))
    )  # noqa: S307
    keras.Model(inputs, outputs).save(path)
    marker.unlink(missing_ok=True)  # building the model ran the lambda once; loading must not
    return path


def _foreign_weights(path: Path) -> Path:
    """A real Keras .weights.h5 of a model that is not the base."""
    import keras

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    model.save_weights(path)
    return path


def _manifest(folder: Path, manifest: object) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    _write(folder / "tlkit-weights.json", json.dumps(manifest))
    return folder


@dataclass(frozen=True)
class Case:
    setup: Callable[[Ctx], list[str]]
    expect: str  # in stderr (whitespace-normalised, case-insensitive)
    usage: bool = False  # a Typer/Click parse error: a usage box, exit status 2
    env: tuple[tuple[str, str], ...] = ()
    plugin: str | None = None  # a key of PLUGINS: installed (as if pip-installed) for the row


PLUGINS = {
    # Its register hook raises: the registry records the failure; the head is simply unknown.
    "BROKEN_REGISTER": """
import tlkit

@tlkit.hookimpl
def register_heads(register):
    raise RuntimeError("this plugin is broken")
""",
    # Registers fine; its build function raises when the model is assembled.
    "BROKEN_BUILD": """
import tlkit

def build(features, num_classes):
    raise RuntimeError("the head exploded")

@tlkit.hookimpl
def register_heads(register):
    register(tlkit.HeadSpec(name="boom", build=build, description="always fails"))
""",
}


C = Case
CASES = {
    # ---- train: data folders
    "train-data-missing": C(lambda c: c.train(data=c.tmp / "nope"), "does not exist"),
    "train-data-is-a-file": C(lambda c: c.train(data=c.file("data.txt", "x")), "is not a folder"),
    "train-data-no-train-folder": C(lambda c: c.train(data=c.file("d/val/a/x.png").parents[2]), "has no train/"),
    "train-data-one-class": C(
        lambda c: c.train(
            data=c.data_copy(lambda d: (shutil.rmtree(d / "train" / "dog"), shutil.rmtree(d / "val" / "dog")))
        ),
        "only one class",
    ),
    "train-data-empty-class": C(
        lambda c: c.train(data=c.data_copy(lambda d: [p.unlink() for p in (d / "train" / "dog").iterdir()])), "dog"
    ),
    "train-data-val-classes-differ": C(
        lambda c: c.train(data=c.data_copy(lambda d: (d / "val" / "dog").rename(d / "val" / "wolf"))), "wolf"
    ),
    "train-data-bad-image": C(
        lambda c: c.train(
            data=c.data_copy(lambda d: _write(d / "train" / "cat" / "broken.png", b"\x89PNG\r\n\x1a\n nope"))
        ),
        "--skip-bad-images",
    ),
    # ---- train: options
    "train-output-is-a-file": C(lambda c: c.train("--output", c.file("runs.txt", "notes")), "is an existing file"),
    "train-output-under-a-file": C(lambda c: c.train("--output", c.file("f.txt", "x") / "runs"), "is a file"),
    "train-output-inside-data": C(lambda c: c.train("--output", c.data / "runs"), "inside the data folder"),
    "train-image-size-huge": C(lambda c: c.train("--image-size", "100000"), "needs about"),
    "train-image-size-tiny": C(lambda c: c.train("--image-size", "16"), "at least 32 px"),
    "train-image-size-not-a-number": C(lambda c: c.train("--image-size", "big"), "--image-size", usage=True),
    "train-epochs-zero": C(lambda c: c.train("--epochs", "0"), "--epochs"),
    "train-batch-size-zero": C(lambda c: c.train("--batch-size", "0"), "--batch-size"),
    "train-val-split-over-one": C(lambda c: c.train("--val-split", "1.5"), "--val-split"),
    "train-base-unknown": C(lambda c: c.train("--base", "resnet5"), "did you mean 'resnet50'"),
    "train-head-unknown": C(lambda c: c.train("--head", "dense265"), "did you mean 'dense256'"),
    "train-aug-bad-param": C(lambda c: c.train("--aug", "zoom:factr=0.2"), "factr"),
    "train-head-param-garbage": C(lambda c: c.train("--head-param", "===="), "--head-param"),
    "train-class-weight-missing-json": C(lambda c: c.train("--class-weight", str(c.tmp / "w.json")), "w.json"),
    # ---- train: weight files (validated before the run directory exists)
    "train-weights-missing": C(lambda c: c.train("--weights", c.tmp / "no.weights.h5"), "no.weights.h5"),
    "train-weights-is-a-folder": C(lambda c: c.train("--weights", c.file("w/x").parent), "--weights"),
    "train-weights-not-hdf5": C(
        lambda c: c.train("--weights", c.file("junk.weights.h5", b"\x00" * 64)), "not a readable HDF5"
    ),
    "train-weights-wrong-suffix": C(
        lambda c: c.train("--weights", c.file("w.bin", b"\x00" * 64)), "not a Keras weights file"
    ),
    "train-weights-do-not-fit": C(
        lambda c: c.train("--weights", _foreign_weights(c.tmp / "other.weights.h5")), "does not fit base 'mobilenet_v2'"
    ),
    # ---- train --config
    "config-missing": C(lambda c: c.train("--config", c.tmp / "none.toml"), "does not exist"),
    "config-is-a-folder": C(lambda c: c.train("--config", c.tmp), "does not exist"),
    "config-bad-toml": C(lambda c: c.train("--config", c.file("c.toml", "epochs = = 3")), "not valid TOML"),
    "config-binary": C(lambda c: c.train("--config", c.file("c.toml", b"\xff\xfe\x00garbage")), "not valid TOML"),
    "config-wrong-type": C(lambda c: c.train("--config", c.file("c.toml", 'epochs = "ten"\n')), "epochs"),
    "config-unknown-key": C(
        lambda c: c.train("--config", c.file("c.toml", "pateince = 3\n")), "did you mean 'patience'"
    ),
    "config-table-for-scalar": C(lambda c: c.train("--config", c.file("c.toml", "[base]\nname = 1\n")), "base"),
    # ---- train --resume
    "resume-not-a-folder": C(lambda c: ["train", "--resume", str(c.tmp / "nope")], "no such folder"),
    "resume-no-config": C(
        lambda c: ["train", "--resume", str(c.run_copy(lambda r: (r / "config.toml").unlink()))],
        "not a tlkit run directory",
    ),
    "resume-finished-run": C(lambda c: ["train", "--resume", str(c.run)], "already finished"),
    "resume-corrupt-state": C(
        lambda c: ["train", "--resume", str(c.run_copy(lambda r: _write(r / "checkpoints" / "state.json", "{half")))],
        "state.json",
    ),
    "resume-corrupt-config": C(
        lambda c: [
            "train",
            "--resume",
            str(
                c.run_copy(
                    lambda r: (_write(r / "config.toml", "base = [[["), (r / "checkpoints" / "state.json").unlink())
                )
            ),
        ],
        "config.toml",
    ),
    "resume-corrupt-classes": C(
        lambda c: [
            "train",
            "--resume",
            str(
                c.run_copy(
                    lambda r: (_write(r / "classes.json", '{"a": 1}'), (r / "checkpoints" / "state.json").unlink())
                )
            ),
        ],
        "classes.json",
    ),
    # ---- evaluate
    "evaluate-missing-run": C(lambda c: ["evaluate", str(c.tmp / "nope")], "does not exist"),
    "evaluate-plain-folder": C(lambda c: ["evaluate", str(c.tmp)], "not a tlkit run directory"),
    "evaluate-no-model": C(
        lambda c: ["evaluate", str(c.run_copy(lambda r: (r / "model.keras").unlink()))], "model.keras"
    ),
    "evaluate-model-not-a-model": C(
        lambda c: ["evaluate", str(c.run_copy(lambda r: _write(r / "model.keras", b"PK\x03\x04 not a zip really")))],
        "model.keras",
    ),
    "evaluate-corrupt-classes": C(
        lambda c: ["evaluate", str(c.run_copy(lambda r: _write(r / "classes.json", "[1, 2")))], "classes.json"
    ),
    "evaluate-classes-do-not-match-model": C(
        lambda c: ["evaluate", str(c.run_copy(lambda r: _write(r / "classes.json", '["a", "b", "c"]')))], "classes"
    ),
    "evaluate-lambda-model": C(
        lambda c: [
            "evaluate",
            str(_lambda_model(c.tmp / "evil.keras", c.tmp / "PWNED")),
            "--data",
            str(c.data / "val"),
        ],
        "lambda",
    ),
    "evaluate-data-missing": C(
        lambda c: ["evaluate", str(c.run), "--data", str(c.tmp / "nope"), "--output", str(c.tmp / "ev")], "nope"
    ),
    "evaluate-top-k-zero": C(
        lambda c: ["evaluate", str(c.run), "--top-k", "0", "--output", str(c.tmp / "ev")], "--top-k"
    ),
    "evaluate-batch-size-zero": C(
        lambda c: ["evaluate", str(c.run), "--batch-size", "0", "--output", str(c.tmp / "ev")], "--batch-size"
    ),
    "evaluate-output-is-a-file": C(
        lambda c: ["evaluate", str(c.run), "--output", str(c.file("ev.txt", "x"))], "ev.txt"
    ),
    # ---- predict
    "predict-no-images": C(lambda c: ["predict", str(c.run), str(c.file("empty/readme.txt", "x").parent)], "no image"),
    "predict-path-missing": C(lambda c: ["predict", str(c.run), str(c.tmp / "nope.png")], "nope.png"),
    "predict-model-garbage": C(
        lambda c: ["predict", str(c.file("m.keras", b"\x00" * 100)), str(c.data / "val")], "m.keras"
    ),
    "predict-lambda-model": C(
        lambda c: ["predict", str(_lambda_model(c.tmp / "evil.keras", c.tmp / "PWNED")), str(c.data / "val")], "lambda"
    ),
    "predict-bad-format": C(lambda c: ["predict", str(c.run), str(c.data / "val"), "--format", "xml"], "xml"),
    "predict-top-k-zero": C(lambda c: ["predict", str(c.run), str(c.data / "val"), "--top-k", "0"], "--top-k"),
    # ---- report
    "report-plain-folder": C(lambda c: ["report", str(c.tmp)], "not a tlkit run directory"),
    "report-corrupt-metrics": C(
        lambda c: ["report", "--no-evaluate", str(c.run_copy(lambda r: _write(r / "metrics.json", "{oops")))],
        "metrics.json",
    ),
    "report-metrics-not-an-object": C(
        lambda c: ["report", "--no-evaluate", str(c.run_copy(lambda r: _write(r / "metrics.json", "[1, 2]")))],
        "metrics.json",
    ),
    "report-history-not-text": C(
        lambda c: [
            "report",
            "--no-evaluate",
            str(c.run_copy(lambda r: _write(r / "history.csv", b"epoch,loss\n1,\xff\xfe\x00\n"))),
        ],
        "history.csv",
    ),
    "report-corrupt-config": C(
        lambda c: ["report", "--no-evaluate", str(c.run_copy(lambda r: _write(r / "config.toml", "= broken")))],
        "config.toml",
    ),
    # ---- compare
    "compare-missing-run": C(lambda c: ["compare", str(c.run), str(c.tmp / "nope"), "--no-plot"], "nope"),
    "compare-corrupt-metrics": C(
        lambda c: [
            "compare",
            str(c.run),
            str(c.run_copy(lambda r: _write(r / "metrics.json", "\x00\x01"))),
            "--no-plot",
        ],
        "metrics.json",
    ),
    "compare-plot-is-a-folder": C(lambda c: ["compare", str(c.run), "--plot", str(c.tmp)], "--plot"),
    # ---- weights
    "weights-download-unknown-base": C(
        lambda c: ["weights", "download", "resnet5", "--to", str(c.tmp / "b")], "resnet5"
    ),
    "weights-import-missing": C(lambda c: ["weights", "import", str(c.tmp / "nope")], "no such folder"),
    "weights-import-no-manifest": C(lambda c: ["weights", "import", str(c.tmp)], "tlkit-weights.json"),
    "weights-import-manifest-garbage": C(
        lambda c: ["weights", "import", str(c.file("b/tlkit-weights.json", "{{").parent)], "not readable JSON"
    ),
    "weights-import-path-traversal": C(
        lambda c: [
            "weights",
            "import",
            str(
                _manifest(
                    c.tmp / "b",
                    {"format": 1, "files": [{"base": "x", "file": "../../etc/passwd", "sha256": "0" * 64, "bytes": 1}]},
                )
            ),
        ],
        "plain 'file' name",
    ),
    # ---- cache
    "cache-info-dir-is-a-file": C(
        lambda c: ["cache", "info"], "TLKIT_CACHE_DIR", env=(("TLKIT_CACHE_DIR", "{tmp}/cache-file"),)
    ),
    "cache-clear-dir-is-a-file": C(
        lambda c: ["cache", "clear"], "TLKIT_CACHE_DIR", env=(("TLKIT_CACHE_DIR", "{tmp}/cache-file"),)
    ),
    # ---- new-plugin
    "new-plugin-bad-name": C(lambda c: ["new-plugin", "9 bad", "--dir", str(c.tmp)], "must start with a lowercase"),
    "new-plugin-bad-kind": C(lambda c: ["new-plugin", "good", "--kind", "widget", "--dir", str(c.tmp)], "widget"),
    "new-plugin-exists": C(
        lambda c: ["new-plugin", "good", "--dir", str(c.file("tlkit-good/x").parents[1])], "already exists"
    ),
    "new-plugin-dir-is-a-file": C(lambda c: ["new-plugin", "good", "--dir", str(c.file("d.txt", "x"))], "d.txt"),
    # ---- plugins
    "plugin-failed-to-register": C(
        lambda c: c.train("--head", "ghost"), "unknown head 'ghost'", plugin="BROKEN_REGISTER"
    ),
    "plugin-head-build-raises": C(
        lambda c: c.train("--head", "boom"), "building the model failed", plugin="BROKEN_BUILD"
    ),
}


def _stderr_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_hostile_input_is_one_clear_error_and_nothing_is_lost(world, tmp_path, monkeypatch, case):
    from tlkit.cli import app
    from tlkit.registry import manager as registry

    data, run = world
    ctx = Ctx(data, run, tmp_path)
    (tmp_path / "cache-file").write_text("not a folder")
    env = {key: value.format(tmp=tmp_path) for key, value in case.env}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    if case.plugin:
        from tlkit.testing import registry_with

        module = types.ModuleType(f"hostile_{case.plugin.lower()}")
        exec(PLUGINS[case.plugin], module.__dict__)  # noqa: S102 - the test's own source
        monkeypatch.setattr(registry, "_REGISTRY", registry_with(module))
    data_before, run_before = fingerprint(data), fingerprint(run)
    args = case.setup(ctx)
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200", **env})
    shown = f"exit {result.exit_code}\n{result.output}"
    assert result.exit_code != 0, shown
    assert "Traceback" not in result.output and not isinstance(result.exception, (AssertionError, TypeError)), shown
    text = " ".join(result.stderr.split()).lower()
    assert case.expect.lower() in text, shown
    if case.usage:
        assert result.exit_code == 2, shown
    else:
        lines = _stderr_lines(result.stderr)
        errors = [i for i, line in enumerate(lines) if line.startswith("Error:")]
        assert len(errors) == 1 and len(lines) - errors[0] <= 3, shown
        if args[0] != "train":  # train shows its progress (Data: ..., Model: ...) before a late refusal
            assert len(lines) <= 3, shown
        assert "please report it" not in text, shown  # every user mistake has its own message
    assert fingerprint(data) == data_before, "the data folder changed"
    assert fingerprint(run) == run_before, "the earlier run changed"
    assert not ctx.runs.exists() or not any(ctx.runs.iterdir()), "a run directory was left behind"
    assert not (tmp_path / "PWNED").exists(), "code from a model file ran"


# --------------------------------------------------------------------------- pre-flight, disk, races


def test_preflight_names_the_estimate_and_the_limit(tmp_path):
    from tlkit.config.preflight import check_pixels, check_run_dir_space
    from tlkit.errors import TlkitError

    with pytest.raises(
        TlkitError,
        match=r"decoding 10 images at --image-size 1000 needs about 28\.6 MiB "
        r"but only 1\.0 MiB is free on disk",
    ):
        check_pixels(10, 1000, 4, workdir=tmp_path, disk=1 << 20, memory=1 << 40)
    with pytest.raises(TlkitError, match=r"batch of 4 .* needs about .* but only 1\.0 MiB of memory"):
        check_pixels(10, 1000, 4, workdir=tmp_path, disk=1 << 40, memory=1 << 20)
    check_pixels(10, 32, 4, workdir=tmp_path, disk=1 << 30, memory=1 << 30)  # fits: no error
    with pytest.raises(TlkitError, match="run directory .* needs about .* free on disk at"):
        check_run_dir_space(tmp_path, params=1_000_000, trainable=1000, disk=64 << 10)


def _mount_tmpfs(mount: Path, options: str) -> None:
    """Mount a tmpfs at ``mount`` or skip the test (mounting needs privileges a CI may not have)."""
    mount.mkdir()
    try:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount)], capture_output=True, text=True, timeout=20
        )
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"cannot mount a tmpfs here: {exc}")
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")


@pytest.fixture
def read_only_folder(tmp_path):
    """A folder this process cannot write: chmod 0o500, or (as root, where permission bits do not
    stop writes) a read-only tmpfs; skipped where neither is possible."""
    folder = tmp_path / "locked"
    if os.geteuid() != 0:
        folder.mkdir()
        folder.chmod(0o500)
        yield folder
        folder.chmod(0o700)
        return
    _mount_tmpfs(folder, "ro,size=64k")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], capture_output=True, timeout=20)


def test_output_on_a_read_only_folder_fails_before_any_work(world, read_only_folder):
    from tlkit.cli import app

    data, _ = world
    assert not os.access(read_only_folder, os.W_OK)
    result = CliRunner().invoke(app, ["train", "--data", str(data), *TINY, "--output", str(read_only_folder / "runs")])
    assert result.exit_code == 1, result.output
    lines = _stderr_lines(result.stderr)
    assert len(lines) == 1 and "is not writable" in lines[0] and str(read_only_folder) in lines[0], result.output
    assert not (read_only_folder / "runs").exists()


@pytest.fixture
def tiny_filesystem(tmp_path):
    """A 64 KiB tmpfs (skipped where mounting is not permitted)."""
    mount = tmp_path / "full"
    _mount_tmpfs(mount, "size=64k")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True, timeout=20)


def test_output_on_a_full_disk_fails_before_training(world, tiny_filesystem):
    from tlkit.cli import app

    data, _ = world
    result = CliRunner().invoke(app, ["train", "--data", str(data), *TINY, "--output", str(tiny_filesystem / "runs")])
    assert result.exit_code == 1, result.output
    text = " ".join(result.stderr.split())
    assert "run directory (model, checkpoints, plots) needs about" in text and "free on disk" in text, text
    assert "Model:" not in result.stderr, "the refusal came after the model was built"
    assert not (tiny_filesystem / "runs").exists()


def test_two_trainings_into_the_same_output_both_finish(world, tmp_path):
    """Two processes started at once into one --output each get their own run directory."""
    data, _ = world
    runs = tmp_path / "runs"
    command = [
        str(Path(sys.executable).parent / "tlkit"),
        "train",
        "--data",
        str(data),
        *TINY,
        "--output",
        str(runs),
        "--quiet",
    ]
    env = {**os.environ, "COLUMNS": "200"}
    processes = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)
    ]
    outputs = [p.communicate(timeout=600) for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs
    dirs = {Path(out.strip()) for out, _ in outputs}
    assert len(dirs) == 2 and all(d.parent == runs and (d / "metrics.json").is_file() for d in dirs)


# --------------------------------------------------------------------------- damaged feature cache entries


class _CountingEngine:
    name = "test"

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.calls += 1
        return batch.reshape(len(batch), -1)[:, :4] / 255.0


def _data(entry: Path) -> Path:
    from tlkit.features.store import FeatureStore

    return entry / FeatureStore.data_name("float32")


def _meta(entry: Path) -> Path:
    from tlkit.features.store import FeatureStore

    return FeatureStore(entry.parent.parent).meta_path(entry.name)


def _truncate(entry: Path) -> None:
    with open(_data(entry), "r+b") as fh:
        fh.truncate(8)


def _flip_a_byte(entry: Path) -> None:
    raw = bytearray(_data(entry).read_bytes())
    raw[5] ^= 0xFF
    _write(_data(entry), bytes(raw))


DAMAGE = {
    "features-truncated": _truncate,
    "features-one-byte-flipped": _flip_a_byte,
    "features-missing": lambda e: _data(e).unlink(),
    "meta-not-json": lambda e: _write(_meta(e), "{\x00"),
    "meta-a-list": lambda e: _write(_meta(e), "[1, 2]"),
    "meta-shape-garbage": lambda e: _write(
        _meta(e), json.dumps({**json.loads(_meta(e).read_text()), "shape": ["a", None]})
    ),
    "meta-no-checksum": lambda e: _write(
        _meta(e),
        json.dumps({k: v for k, v in json.loads(_meta(e).read_text()).items() if k != "sha256"}),
    ),
    "entry-is-a-file": lambda e: (shutil.rmtree(e), _write(e, b"junk")),
}


@pytest.mark.parametrize("damage", list(DAMAGE.values()), ids=list(DAMAGE))
def test_a_damaged_cache_entry_is_recomputed_not_trusted(tmp_path, monkeypatch, damage):
    from tlkit.features.store import FeatureStore

    monkeypatch.setenv("TLKIT_CACHE_DIR", str(tmp_path / "cache"))
    load_or_compute = FeatureStore().load_or_compute
    pixels = np.random.default_rng(0).integers(0, 255, size=(6, 2, 2, 3), dtype=np.uint8)
    labels = np.arange(6) % 2
    engine = _CountingEngine()
    first = load_or_compute(key="k", pixels=pixels, labels=labels, feature_shape=(4,), engine=engine, batch_size=4)
    expected = np.array(first.features)
    assert not first.hit and engine.calls == 2
    again = load_or_compute(key="k", pixels=pixels, labels=labels, feature_shape=(4,), engine=engine, batch_size=4)
    assert again.hit and engine.calls == 2  # an intact entry is reused
    damage(first.path)
    fixed = load_or_compute(key="k", pixels=pixels, labels=labels, feature_shape=(4,), engine=engine, batch_size=4)
    assert not fixed.hit and engine.calls == 4, "a damaged entry was trusted"
    np.testing.assert_array_equal(np.array(fixed.features), expected)
    reused = load_or_compute(key="k", pixels=pixels, labels=labels, feature_shape=(4,), engine=engine, batch_size=4)
    assert reused.hit and engine.calls == 4  # and the repaired entry is good again
