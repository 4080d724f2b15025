"""Training that practitioners trust: stages, schedules, losses, imbalance, stopping, resume, determinism."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

import tlkit
from tests import support
from tests.support import TLKIT, default_signals, invoke_tlkit, run_tlkit, write_images
from tlkit import TlkitError

FAST = {**support.FAST, "verbose": False}
CLI_FAST = support.CLI_FAST


def _train(data, tmp_path, **options):
    return tlkit.train(data=str(data), output=str(tmp_path / "runs"), **{**FAST, **options})


def _rows(run_dir: Path) -> list[dict[str, str]]:
    return list(csv.DictReader((run_dir / "history.csv").open()))


def test_fine_tuning_stage_unfreezes_the_top_but_not_batchnorm(tiny_data, tmp_path, monkeypatch):
    import keras

    from tlkit.training import objectives

    compiled = []
    real_compile = objectives.compile_for_stage

    def spy(model, config, **options):
        compiled.append((options["steps_per_epoch"], options["steps_per_execution"]))
        return real_compile(model, config, **options)

    monkeypatch.setattr(objectives, "compile_for_stage", spy)

    from tlkit.model.builder import base_layer
    from tlkit.registry.manager import get_registry
    from tlkit.weights.build import build_base

    result = _train(
        tiny_data, tmp_path, epochs=2, fine_tune_epochs=2, unfreeze="10", fine_tune_lr=1e-3, metrics=["accuracy"]
    )
    rows = _rows(result.run_dir)
    assert [r["stage"] for r in rows] == ["head", "head", "fine_tune", "fine_tune"]
    assert [r["epoch"] for r in rows] == ["1", "2", "3", "4"]
    assert result.metrics["head_epochs"] == 2 and result.metrics["fine_tune_epochs"] == 2
    # The head on cached features runs a whole epoch (up to 64 steps) per compiled call; the
    # whole model, whose steps are long, one step per call (per-step progress, prompt Ctrl-C).
    (head_steps, head_per_call), (_, tune_per_call) = compiled
    assert head_steps > 1 and head_per_call == min(head_steps, 64) and tune_per_call == 1

    keras.utils.set_random_seed(0)
    initial = build_base(get_registry().base("mobilenet_v2"), 32, None)  # the run's base before training
    keras.utils.set_random_seed(0)
    after = tlkit.build_model("mobilenet_v2", "dense256", 3, image_size=32, weights="none")
    from tlkit.io.rundir import RunDir
    from tlkit.training.checkpoints import checkpoint_files, load_weights

    run = RunDir.open(result.run_dir)
    state = json.loads(run.state_path.read_text())
    last, _, best = checkpoint_files(run, state)
    assert state["checkpoint"] == "fine_tune-0004" and last.name == "last-fine_tune-0004.arrays"
    # Only the committed generation's files are left (older ones were removed after each commit).
    assert {p.name for p in run.checkpoints_dir.glob("*.arrays")} <= {
        last.name,
        f"optimizer-{state['checkpoint']}.arrays",
        best.name,
    }
    load_weights(after, last)  # end of fine-tuning
    tuned = base_layer(after)
    changed = {
        layer.name
        for layer, before in zip(tuned.layers, initial.layers)
        if layer.weights and any(not np.array_equal(a, b) for a, b in zip(layer.get_weights(), before.get_weights()))
    }
    top = {layer.name for layer in tuned.layers[-10:] if layer.weights}
    batchnorm = {layer.name for layer in tuned.layers if isinstance(layer, keras.layers.BatchNormalization)}
    assert changed, "fine-tuning changed no base weights"
    assert changed <= top - batchnorm, changed - (top - batchnorm)
    saved = base_layer(keras.saving.load_model(result.model_path))  # the best epoch's model
    saved_changed = any(not np.array_equal(a, b) for a, b in zip(saved.get_weights(), initial.get_weights()))
    assert saved_changed == (result.metrics["best_stage"] == "fine_tune")


@pytest.mark.parametrize(
    "unfreeze, message",
    [
        ("500", "beyond the depth of base"),
        ("from:block_16_projct", "did you mean 'block_16_project'"),
        ("some", "must be a number K, 'all' or from:LAYER_NAME"),
    ],
)
def test_bad_unfreeze_is_a_clear_error(tiny_data, tmp_path, unfreeze, message):
    with pytest.raises(TlkitError, match=message):
        _train(tiny_data, tmp_path, epochs=1, fine_tune_epochs=1, unfreeze=unfreeze)


def test_schedules_warmup_and_lr_in_history(tiny_data, tmp_path):
    cosine = _train(tiny_data, tmp_path, epochs=4, lr=0.01, schedule="cosine", warmup_epochs=1)
    lrs = [float(r["lr"]) for r in _rows(cosine.run_dir)]
    assert lrs[0] == pytest.approx(0.01, rel=1e-3)  # end of the warm-up epoch
    assert lrs[1] > lrs[2] > lrs[3] >= 0
    step = _train(
        tiny_data,
        tmp_path,
        epochs=4,
        lr=0.01,
        schedule="step",
        decay_rate=0.5,
        decay_epochs=2,
        optimizer="sgd",
        nesterov=True,
        momentum=0.8,
    )
    lrs = [float(r["lr"]) for r in _rows(step.run_dir)]
    # lr is read after each epoch's last step; steps = 24 / 8 = 3 per epoch
    assert lrs == pytest.approx([0.01, 0.005, 0.005, 0.0025], rel=1e-4)


def test_losses_and_metrics(tiny_data, tmp_path):
    from tlkit.config.options import TrainConfig, merge
    from tlkit.training.objectives import make_loss

    assert type(make_loss(merge(TrainConfig(), {"loss": "focal"}))).__name__ == "CategoricalFocalCrossentropy"
    assert make_loss(merge(TrainConfig(), {"label_smoothing": 0.1})).label_smoothing == 0.1
    assert type(make_loss(merge(TrainConfig(), {"loss": "mean_squared_error"}))).__name__ == "MeanSquaredError"
    result = _train(
        tiny_data,
        tmp_path,
        epochs=1,
        loss="focal",
        label_smoothing=0.1,
        metrics=["accuracy", "top_k", "precision", "recall", "f1", "fbeta"],
        top_k=2,
        fbeta=0.5,
    )
    columns = set(_rows(result.run_dir)[0])
    assert {"top_2_accuracy", "precision", "recall", "f1", "fbeta", "val_top_2_accuracy", "val_fbeta"} <= columns


def test_class_weights_and_imbalance_warning(tmp_path):
    from tlkit.data.imbalance import class_weights

    labels = np.array([0] * 8 + [1] * 2)
    assert class_weights("balanced", labels, ["a", "b"]) == pytest.approx({0: 0.625, 1: 2.5})
    path = tmp_path / "w.json"
    path.write_text(json.dumps({"b": 3}))
    assert class_weights(str(path), labels, ["a", "b"]) == {0: 1.0, 1: 3.0}
    path.write_text(json.dumps({"c": 3}))
    with pytest.raises(TlkitError, match="not in the data: c"):
        class_weights(str(path), labels, ["a", "b"])

    root = tmp_path / "skewed"
    write_images(root / "train" / "many", 12, (200, 0, 0))
    write_images(root / "train" / "few", 3, (0, 0, 200), seed=1)
    result = invoke_tlkit(
        "train",
        "--data",
        str(root),
        *CLI_FAST,
        "--epochs",
        "1",
        "--class-weight",
        "balanced",
        "--output",
        str(tmp_path / "runs"),
    )
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stderr.split())
    assert "imbalanced (largest/smallest = 5.0×)" in text and "Class weights: few" in text
    assert "many 10/2" in text  # train/val distribution is shown


def test_early_stopping_and_the_saved_model_is_the_best_epoch(tiny_data, tmp_path):
    import keras

    stopped = _train(tiny_data, tmp_path, epochs=6, lr=1e-9, patience=2, monitor="val_loss")
    assert stopped.metrics["epochs_run"] == 3 and stopped.metrics["stopped_early"] == ["head"]

    best = _train(tiny_data, tmp_path, epochs=4, lr=0.05, monitor="val_loss", head="linear")
    epoch = best.metrics["best_epoch"]
    assert best.history["val_loss"][epoch - 1] == min(best.history["val_loss"])
    from tlkit.data.decode import decode_split
    from tlkit.data.folders import scan_dataset

    val = decode_split(scan_dataset(tiny_data).val, 32, tmp_path / "px", name="val")
    model = keras.saving.load_model(best.model_path)
    probs = model.predict(np.asarray(val.pixels, dtype="float32"), verbose=0)
    onehot = np.eye(3)[val.labels]
    loss = float(keras.losses.CategoricalCrossentropy()(onehot, probs))
    assert loss == pytest.approx(best.history["val_loss"][epoch - 1], rel=1e-3)


def _start(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [TLKIT, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=default_signals
    )


def _wait_for_epoch(run_root: Path, epoch: int, process: subprocess.Popen, timeout: float = 300) -> Path:
    deadline = time.time() + timeout
    while time.time() < deadline:
        for state_file in run_root.glob("*/checkpoints/state.json"):
            try:
                if json.loads(state_file.read_text()).get("epoch", 0) >= epoch:
                    return state_file.parents[1]
            except ValueError:
                pass  # being replaced right now
        assert process.poll() is None, process.communicate()
        time.sleep(0.02)
    raise AssertionError("training never reached the epoch")


RESUMABLE = [*CLI_FAST, "--epochs", "14", "--deterministic", "--no-feature-cache", "--head", "linear", "--lr", "0.01"]


def _interrupt(args: list[str], run_root: Path, epoch: int, sig: signal.Signals) -> tuple[Path, int, str]:
    """Start ``tlkit ARGS``, send ``sig`` once a checkpoint of ``epoch`` (or later) exists."""
    process = _start(args)
    run_dir = _wait_for_epoch(run_root, epoch, process)
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=120)
    return run_dir, process.returncode, stderr


def test_interrupted_three_ways_then_resumed_equals_an_uninterrupted_run(tiny_data, tmp_path):
    """Ctrl-C, SIGTERM and SIGKILL on one run, resumed after each: the result is the reference's.

    One chain instead of a run per signal: each tlkit process costs a TensorFlow start-up.
    """
    # The uninterrupted reference trains in parallel with the chain (its own process).
    reference = _start(["train", "--data", str(tiny_data), *RESUMABLE, "--output", str(tmp_path / "ref"), "--quiet"])
    runs = tmp_path / "runs"

    # Ctrl-C: checkpoint, exit 130, say how to resume.
    run_dir, code, stderr = _interrupt(
        ["train", "--data", str(tiny_data), *RESUMABLE, "--output", str(runs)], runs, 2, signal.SIGINT
    )
    assert code == 130, stderr
    assert "--resume" in stderr and "Traceback" not in stderr
    state = json.loads((run_dir / "checkpoints" / "state.json").read_text())
    assert state["status"] == "interrupted" and state["epoch"] >= 2
    interrupted_at = state["epoch"]

    # SIGTERM (what schedulers and `kill` send) on the resumed run: the same, exit 143.
    _, code, stderr = _interrupt(["train", "--resume", str(run_dir)], runs, interrupted_at + 1, signal.SIGTERM)
    assert code == 143, stderr
    assert "terminated (SIGTERM)" in " ".join(stderr.split()) and "Traceback" not in stderr
    state = json.loads((run_dir / "checkpoints" / "state.json").read_text())
    assert state["status"] == "interrupted" and state["epoch"] >= interrupted_at + 1
    assert not (run_dir / "model.keras").exists()

    # --resume refuses other folders, extra options and changed data (checked in-process).
    not_a_run = invoke_tlkit("train", "--resume", str(tmp_path))
    assert not_a_run.returncode == 1 and "not a tlkit run directory" in not_a_run.stderr
    mixed = invoke_tlkit("train", "--resume", str(run_dir), "--epochs", "3")
    assert mixed.returncode == 1 and "drop the other options" in mixed.stderr
    image = tiny_data / "val" / "dog" / "img_000.png"
    original = image.read_bytes()
    write_images(tiny_data / "val" / "dog", 1, (0, 0, 0), seed=5)  # changes val/dog/img_000.png
    changed = invoke_tlkit("train", "--resume", str(run_dir))
    assert changed.returncode == 1 and "val images changed" in changed.stderr
    image.write_bytes(original)

    # SIGKILL: no handler runs; the last checkpoint is what --resume continues from.
    state_epoch = json.loads((run_dir / "checkpoints" / "state.json").read_text())["epoch"]
    _, code, _ = _interrupt(["train", "--resume", str(run_dir)], runs, state_epoch + 1, signal.SIGKILL)
    assert code == -signal.SIGKILL
    assert not (run_dir / "model.keras").exists()

    resumed = run_tlkit("train", "--resume", str(run_dir), "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    assert Path(resumed.stdout.strip()) == run_dir
    for name in ("model.keras", "metrics.json", "plots/accuracy.png", "history.csv"):
        assert (run_dir / name).exists(), name
    ref_out, ref_err = reference.communicate(timeout=600)
    assert reference.returncode == 0, ref_err
    rows, expected = _rows(run_dir), _rows(Path(ref_out.strip()))
    assert [r["epoch"] for r in rows] == [str(i) for i in range(1, 15)]
    for got, want in zip(rows, expected):
        assert float(got["val_loss"]) == pytest.approx(float(want["val_loss"]), rel=1e-5)
    again = invoke_tlkit("train", "--resume", str(run_dir))
    assert again.returncode == 1 and "already finished" in again.stderr


def test_deterministic_runs_give_identical_histories(tiny_data, tmp_path):
    args = [
        "--data",
        str(tiny_data),
        *CLI_FAST,
        "--epochs",
        "2",
        "--deterministic",
        "--seed",
        "3",
        "--aug",
        "flip_horizontal",
        "--aug",
        "rotation:factor=0.1",
        "--quiet",
    ]
    # Two processes at once (each pays a TensorFlow start-up; running them side by side halves the wait).
    first, second = (_start(["train", *args, "--output", str(tmp_path / name)]) for name in "ab")
    (out_a, err_a), (out_b, err_b) = first.communicate(timeout=600), second.communicate(timeout=600)
    assert first.returncode == 0 and second.returncode == 0, err_a + err_b
    assert _rows(Path(out_a.strip())) == _rows(Path(out_b.strip()))


@pytest.mark.parametrize(
    "args, message",
    [
        (["--schedule", "cosne"], "did you mean 'cosine'"),
        (["--monitor", "val_f1", "--metrics", "accuracy"], "needs the f1 metric"),
        (["--fine-tune-lr", "-1"], "--fine-tune-lr is out of range"),
        (["--reduce-lr-patience", "2", "--schedule", "cosine"], "works with --schedule constant"),
        (["--class-weight", "heavy"], "must be none, balanced or a .json file"),
        (["--metrics", "accuracy,auc"], "unknown --metrics 'auc'"),
    ],
)
def test_bad_training_options(tiny_data, tmp_path, args, message):
    result = invoke_tlkit("train", "--data", str(tiny_data), *CLI_FAST, *args, "--output", str(tmp_path / "r"))
    assert result.returncode == 1 and message in result.stderr, result.stderr
    assert not (tmp_path / "r").exists()


def test_every_option_comes_from_a_config_file(tiny_data, tmp_path):
    config = tmp_path / "c.toml"
    config.write_text(
        f'data = "{tiny_data}"\nbase = "mobilenet_v2"\nschedule = "cosine"\n'
        'fine_tune_epochs = 2\nunfreeze = "from:block_16_project"\nmetrics = ["accuracy", "f1"]\n'
    )
    printed = invoke_tlkit("train", "--config", str(config), "--patience", "4", "--print-config")
    assert printed.returncode == 0, printed.stderr
    for line in (
        'schedule = "cosine"',
        "fine_tune_epochs = 2",
        'unfreeze = "from:block_16_project"',
        "patience = 4",
        'monitor = "val_accuracy"',
    ):
        assert line in printed.stdout
    config.write_text("pateince = 3\n")
    typo = invoke_tlkit("train", "--config", str(config))
    assert typo.returncode == 1 and "did you mean 'patience'" in typo.stderr
