"""End to end: `tlkit train` through the CLI and `tlkit.train` through the API, on tiny images.

The CLI runs in-process (``invoke_tlkit``, Typer's CliRunner) unless a real process is the point.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

from tests import support
from tests.support import invoke_tlkit, snapshot, write_images

FAST = [*support.CLI_FAST, "--head", "dense256"]


def _files(run_dir: Path) -> set[str]:
    return {str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file()}


def test_train_writes_a_complete_run_and_config_reproduces_it(tiny_data, tmp_path):
    before = snapshot(tiny_data)
    runs = tmp_path / "runs"
    result = invoke_tlkit(
        "train",
        "--data",
        str(tiny_data),
        *FAST,
        "--epochs",
        "2",
        "--aug",
        "flip_horizontal",
        "--aug",
        "rotation:factor=0.05",
        "--output",
        str(runs),
        "--json",
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    run_dir = Path(summary["run_dir"])
    assert run_dir.parent == runs
    assert {
        "config.toml",
        "classes.json",
        "model.keras",
        "history.csv",
        "metrics.json",
        "plots/accuracy.png",
        "plots/loss.png",
    } <= _files(run_dir)
    assert json.loads((run_dir / "classes.json").read_text()) == ["cat", "dog", "fox"]
    rows = list(csv.DictReader((run_dir / "history.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(rows[0])
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["epochs_run"] == 2 and metrics["num_train"] == 24 and metrics["num_val"] == 9
    assert 0.0 <= metrics["best_val_accuracy"] <= 1.0
    for plot in ("accuracy", "loss"):
        assert (run_dir / "plots" / f"{plot}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    config = (run_dir / "config.toml").read_text()
    table = tomllib.loads(config)
    assert table["augmentations"] == ["flip_horizontal", "rotation:factor=0.05,fill_mode=reflect"]
    assert table["image_size"] == 32 and "head_params" in table
    assert snapshot(tiny_data) == before, "tlkit wrote into the data folder"

    first_files = snapshot(run_dir)
    again = invoke_tlkit("train", "--config", str(run_dir / "config.toml"), "--quiet")
    assert again.returncode == 0, again.stderr
    second = Path(again.stdout.strip())
    assert second != run_dir and second.parent == runs
    assert snapshot(run_dir) == first_files, "an earlier run was modified"
    strip = lambda text: text.split("[tlkit]")[0]  # noqa: E731  (provenance differs)
    assert strip((second / "config.toml").read_text()) == strip(config)


def test_saved_model_matches_the_run_metrics(tiny_data, tmp_path):
    """model.keras, loaded without tlkit, reproduces the last epoch's val accuracy."""
    import tlkit

    result = tlkit.train(
        data=str(tiny_data),
        base="mobilenet_v2",
        weights="none",
        image_size=32,
        batch_size=8,
        epochs=2,
        head="linear",
        output=str(tmp_path / "runs"),
        verbose=False,
    )
    assert result.run_dir.is_dir() and result.model_path.exists()
    code = textwrap.dedent(f"""
        import json, sys
        from pathlib import Path
        import numpy as np, keras
        from PIL import Image
        model = keras.saving.load_model({str(result.model_path)!r})
        classes = json.loads(Path({str(result.run_dir / "classes.json")!r}).read_text())
        xs, ys = [], []
        for label, name in enumerate(classes):
            for path in sorted(Path({str(tiny_data / "val")!r}, name).glob('*.png')):
                img = Image.open(path).convert('RGB').resize((32, 32), Image.BILINEAR)
                xs.append(np.asarray(img, dtype='float32')); ys.append(label)
        pred = model.predict(np.stack(xs), verbose=0).argmax(axis=1)
        print('ACC', float((pred == np.array(ys)).mean()))
        assert 'tlkit' not in sys.modules
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    accuracy = float(out.stdout.split("ACC")[1])
    assert accuracy == pytest.approx(result.history["val_accuracy"][-1], abs=1e-6)


def test_bad_images_stop_by_default_and_can_be_skipped(tiny_data, tmp_path):
    bad = tiny_data / "train" / "cat" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    runs = tmp_path / "runs"
    stopped = invoke_tlkit("train", "--data", str(tiny_data), *FAST, "--epochs", "1", "--output", str(runs))
    assert stopped.returncode == 1
    assert str(bad) in stopped.stderr and "--skip-bad-images" in stopped.stderr
    assert "Traceback" not in stopped.stderr
    assert not runs.exists() or not any(runs.iterdir()), "a run that failed to start left a run directory"
    skipped = invoke_tlkit(
        "train", "--data", str(tiny_data), *FAST, "--epochs", "1", "--output", str(runs), "--skip-bad-images", "--json"
    )
    assert skipped.returncode == 0, skipped.stderr
    metrics = json.loads(skipped.stdout)["metrics"]
    assert metrics["skipped_bad_images"] == [str(bad)] and metrics["num_train"] == 24


def test_val_split_when_there_is_no_val_folder(tmp_path):
    root = tmp_path / "data"
    for k, (name, color) in enumerate({"a": (250, 0, 0), "b": (0, 0, 250)}.items()):
        write_images(root / "train" / name, 10, color, seed=k)
    result = invoke_tlkit(
        "train",
        "--data",
        str(root),
        *FAST,
        "--epochs",
        "1",
        "--val-split",
        "0.3",
        "--output",
        str(tmp_path / "runs"),
        "--json",
    )
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout)["metrics"]
    assert (metrics["num_train"], metrics["num_val"]) == (14, 6)
    assert not (root / "val").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--data", "{missing}"], "does not exist"),
        (["--base", "resnet5"], "did you mean 'resnet50'"),
        (["--head", "dense265"], "did you mean 'dense256'"),
        (["--aug", "zoom:factr=0.2"], "no parameter 'factr'; did you mean 'factor'"),
        (["--head-param", "dropout=2"], "must be <= 0.99"),
        (["--epochs", "0"], "--epochs must be a positive integer"),
        (["--weights", "/no/such/file.h5"], "neither 'imagenet', 'none' nor an existing file"),
        (["--output", "{data}/runs"], "inside the data folder"),
        (["--image-size", "16"], "at least 32 px"),
    ],
)
def test_bad_input_is_one_clear_line_and_nothing_is_written(tiny_data, tmp_path, args, message):
    runs = tmp_path / "runs"
    before = snapshot(tiny_data)
    args = [a.format(missing=tmp_path / "missing", data=tiny_data) for a in args]
    base_args = [
        "--data",
        str(tiny_data),
        "--base",
        "mobilenet_v2",
        "--weights",
        "none",
        "--image-size",
        "32",
        "--output",
        str(runs),
    ]
    result = invoke_tlkit("train", *base_args, *args)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error:"), result.stderr
    assert message in " ".join(result.stderr.split()), result.stderr
    assert not runs.exists() or not any(runs.iterdir())
    assert snapshot(tiny_data) == before


def test_an_early_refusal_in_a_real_process_is_one_line_without_tensorflow(tmp_path):
    """A real process (the cases above run in-process, where TensorFlow is already loaded):
    a mistake found before any work neither loads TensorFlow nor shows its start-up noise."""
    code = (
        "import sys\nfrom tlkit.cli.app import main\nsys.argv = ['tlkit'] + sys.argv[1:]\n"
        "try:\n    main()\nfinally:\n    print('TF', 'tensorflow' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, "train", "--data", str(tmp_path / "nope"), "--weights", "none"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert [line for line in result.stderr.splitlines() if line.strip()] == [
        f"Error: data folder {tmp_path / 'nope'} does not exist; expected layout: <data>/train/<class>/<image> "
        f"(and optionally <data>/val/<class>/<image>)"
    ], result.stderr
    assert "TF False" in result.stdout


def test_debug_shows_the_traceback(tmp_path):
    result = invoke_tlkit("--debug", "train", "--data", str(tmp_path / "nope"), "--weights", "none")
    assert result.returncode == 1 and "Traceback" in result.stderr


def test_print_config_and_help_examples(tiny_data):
    printed = invoke_tlkit("train", "--data", str(tiny_data), "--base", "mobilenet_v2", "--print-config")
    assert printed.returncode == 0, printed.stderr
    assert 'base = "mobilenet_v2"' in printed.stdout and "image_size = 224" in printed.stdout
    for command in ("train", "list-bases", "list-heads", "list-augmentations", "plugins", "info"):
        help_text = invoke_tlkit(command, "--help").stdout
        assert "Example: tlkit" in " ".join(help_text.split()), command


def test_python_m_tlkit_works_like_the_command():
    result = subprocess.run([sys.executable, "-m", "tlkit", "list-heads", "--json"], capture_output=True, text=True)
    assert result.returncode == 0
    assert {"dense256", "linear", "mlp"} <= {h["name"] for h in json.loads(result.stdout)}
