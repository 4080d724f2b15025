"""The command line with KerasHub bases, offline, from tiny presets saved in tmp folders: train (feature
path and end to end, fine-tuning), predict, explain, export, and the weights commands."""

from __future__ import annotations

import json
from pathlib import Path

from tlkit_keras_hub import presets
from typer.testing import CliRunner

from tlkit.cli import app

FAST = ["--image-size", "32", "--batch-size", "8", "--epochs", "1"]


def tlkit(*args) -> tuple[int, str]:
    result = CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})
    return result.exit_code, result.output


def _only_run(runs: Path) -> Path:
    (run,) = runs.iterdir()
    return run


def test_dinov2_from_a_preset_folder_trains_predicts_explains_and_exports(tiny_presets, image_folder, tmp_path):
    runs = tmp_path / "runs"
    code, out = tlkit(
        "train",
        "--data",
        image_folder,
        "--base",
        "dinov2_small",
        "--weights",
        tiny_presets["dino"],
        *FAST,
        "--output",
        runs,
    )
    assert code == 0, out
    run = _only_run(runs)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["training_path"] == "features" and metrics["features"]["engine"] == "onnxruntime"
    assert "Feature engine: ONNX Runtime" in out

    code, out = tlkit("predict", run, image_folder / "val", "--json")
    assert code == 0, out
    predictions = [json.loads(line) for line in out.splitlines() if line.startswith("{")]  # JSON lines
    assert len(predictions) == 4 and all(p["label"] in ("cat", "dog") for p in predictions)

    code, out = tlkit("explain", run, image_folder / "val" / "cat", "--output", tmp_path / "why")
    assert code == 0, out
    assert json.loads((tmp_path / "why" / "explanations.json").read_text())["layer"] == "dinov2_small/patch_grid"

    for fmt in ("onnx", "tflite"):
        code, out = tlkit("export", run, "--format", fmt)
        assert code == 0, out
        card = (run / "export" / fmt / "README.md").read_text()
        assert "`model.keras` of the run | loads with plain `keras.saving.load_model` once `keras_hub`" in card
        info = json.loads((run / "export" / fmt / "export.json").read_text())
        assert info["parity"]["top1_agreement"] == 1.0 and info["source"]["model_needs"] == ["keras_hub"]


def test_a_timm_style_cnn_end_to_end_with_fine_tuning(tiny_presets, image_folder, tmp_path):
    runs = tmp_path / "runs"
    code, out = tlkit(
        "train", "--data", image_folder, "--base", "resnet50_a1", "--weights", tiny_presets["resnet"], *FAST,
        "--no-feature-cache", "--aug", "flip_horizontal", "--fine-tune-epochs", "1", "--unfreeze", "all",
        "--head", "linear", "--output", runs,
    )  # fmt: skip
    assert code == 0, out
    metrics = json.loads((_only_run(runs) / "metrics.json").read_text())
    assert metrics["training_path"] == "end-to-end" and metrics["fine_tune_epochs"] == 1


def test_wrong_architecture_and_wrong_size_are_one_line_errors(tiny_presets, image_folder, tmp_path):
    code, out = tlkit(
        "train",
        "--data",
        image_folder,
        "--base",
        "resnet50_a1",
        "--weights",
        tiny_presets["dino"],
        "--output",
        tmp_path,
    )
    assert (
        code != 0
        and "holds a KerasHub DINOV2Backbone, not the ResNetBackbone" in out
        and len(out.strip().splitlines()) == 1
    )
    code, out = tlkit(
        "train", "--data", image_folder, "--base", "vit_base", "--weights", tiny_presets["vit"], "--image-size", "48",
        "--output", tmp_path / "runs",
    )  # fmt: skip
    assert code != 0 and "takes 32 px images only" in out and "--image-size 32" in out
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_offline_weights_a_one_line_message_then_an_archive_in_keras_s_cache(tiny_presets, image_folder, tmp_path):
    code, out = tlkit("weights", "download", "dinov2_base")
    assert code != 0
    error = out.strip().splitlines()[-1]
    assert (
        "kaggle://keras/dinov2/keras/dinov2_base/1" in error
        and "tlkit weights download dinov2_base --to BUNDLE" in error
    )

    # What `tlkit weights download` writes on a machine with internet: the preset, packed in Keras's cache.
    presets.pack(tiny_presets["dino"], presets.keras_cache_dir() / "keras_hub-dinov2_small.tar")
    code, out = tlkit("weights", "list", "--json")
    rows = {r["base"]: r for r in json.loads(out)["bases"]}
    assert rows["dinov2_small"]["available"] and rows["dinov2_small_pooled"]["available"]
    assert not rows["dinov2_base"]["available"]
    code, out = tlkit("weights", "download", "dinov2_small_pooled", "--to", tmp_path / "bundle", "--json")
    assert code == 0, out
    assert json.loads(out)["bases"][0]["status"] == "already local"
    assert (tmp_path / "bundle" / "keras_hub-dinov2_small.tar").is_file()

    runs = tmp_path / "runs"
    code, out = tlkit(
        "train", "--data", image_folder, "--base", "dinov2_small_pooled", "--head", "linear", *FAST, "--output", runs
    )
    assert code == 0, out
    config = (_only_run(runs) / "config.toml").read_text()
    assert 'weights = "imagenet"' in config and 'base = "dinov2_small_pooled"' in config
    # The summary names the preset the weights came from (DINOv2's are self-supervised, not ImageNet's).
    assert "weights pretrained, kaggle://keras/dinov2/keras/dinov2_small" in " ".join(out.split())


def test_weights_download_keeps_the_preset_as_an_archive(tiny_presets, monkeypatch, tmp_path):
    """Online (simulated: the hub answers with the tiny preset), `tlkit weights download` packs the preset
    into Keras's cache, where offline runs find it."""
    import keras_hub
    from tlkit_keras_hub import backbones

    original = keras_hub.models.DINOV2Backbone.from_preset.__func__
    asked = []

    def from_preset(cls, preset, **kwargs):
        if preset.startswith("kaggle://"):
            asked.append(preset)
            preset = str(tiny_presets["dino"])
        return original(cls, preset, **kwargs)

    monkeypatch.setattr(keras_hub.models.DINOV2Backbone, "from_preset", classmethod(from_preset))
    monkeypatch.setattr(backbones.presets, "unreachable", lambda handle: None)
    code, out = tlkit("weights", "download", "dinov2_base", "--json")
    assert code == 0, out
    (row,) = json.loads(out[out.index("{") :])["bases"]
    assert row["status"] == "downloaded" and row["file"] == "keras_hub-dinov2_base.tar"
    assert asked == ["kaggle://keras/dinov2/keras/dinov2_base/1"]
    archive = presets.keras_cache_dir() / "keras_hub-dinov2_base.tar"
    assert presets.read_json(archive, "config.json")["class_name"] == "DINOV2Backbone"
