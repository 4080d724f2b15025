"""`tlkit explain` (Grad-CAM): overlays and their index, heatmaps that find what the model saw, the
report's "Why these mistakes", the base spec's explain_layer, and one-line errors.

The run is made the way training makes one (``tlkit.model.builder.assemble`` with a base spec and the
built-in ``linear`` head, ``model.keras`` + ``config.toml`` + ``classes.json``), with weights set by
hand instead of trained: its tiny base detects red, green and blue regions on a 4×4 grid and the
head predicts the colour with the most area — so where Grad-CAM must look is known.  (An untrained
MobileNetV2 predicts from its bias, and its Grad-CAM is honestly all zero; training one costs
20–40 s here.)  The built-in mobilenet_v2 is explained once, untrained, for shapes and wiring;
torchvision's ImageNet MobileNetV2 (tlkit-torchvision) once on real photos, where the weights are here.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import tlkit
from tests.support import invoke_tlkit
from tlkit.errors import TlkitError

CLASSES = ["cat", "dog", "fox"]  # red, green, blue
RED, GREEN, BLUE, GREY = (230, 30, 30), (30, 230, 30), (30, 30, 230), (90, 90, 90)


def _picture(path: Path, corner: str, colour=RED, size: tuple[int, int] = (48, 36)) -> Path:
    """A grey ``size`` (width, height) image with a ``colour`` block over one quarter."""
    width, height = size
    pixels = np.full((height, width, 3), GREY, dtype=np.uint8)
    rows = slice(0, height // 2) if corner.startswith("top") else slice(height // 2, height)
    cols = slice(0, width // 2) if corner.endswith("left") else slice(width // 2, width)
    pixels[rows, cols] = colour
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def colour_base(input_shape, weights=None):
    """pixels → 1×1 conv "detect" (k: relu(channel k − mean of the others)) → 8×8 average → 4×4×3."""
    import keras

    inputs = keras.Input(input_shape)
    detect = keras.layers.Conv2D(3, 1, activation="relu", name="detect")
    x = detect(inputs)
    kernel = np.full((1, 1, 3, 3), -0.5 / 255, dtype="float32")
    for k in range(3):
        kernel[0, 0, k, k] = 1.0 / 255
    detect.set_weights([kernel, np.zeros(3, "float32")])
    return keras.Model(inputs, keras.layers.AveragePooling2D(8, name="grid")(x), name="colour_base")


COLOUR_BASE = tlkit.BaseSpec(name="colour_grid", build=colour_base, preprocess=list, description="test")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    from tlkit.model.builder import assemble
    from tlkit.registry.manager import get_registry

    root = tmp_path_factory.mktemp("explain")
    parts = assemble(COLOUR_BASE, get_registry().head("linear"), 3, image_size=32, head_params={"dropout": 0.0})
    dense = parts.head.layers[-1]
    dense.set_weights([np.eye(3, dtype="float32") * 20, np.zeros(3, "float32")])
    run = root / "runs" / "20260101-000000-colour_grid-linear"
    run.mkdir(parents=True)
    parts.model.save(run / "model.keras")
    (run / "classes.json").write_text(json.dumps(CLASSES))
    data = root / "data"
    for corner in ("top_left", "bottom_right"):
        _picture(data / "train" / "cat" / f"{corner}.png", corner, RED)
        _picture(data / "val" / "cat" / f"{corner}.png", corner, RED)
        _picture(data / "val" / "dog" / f"red_{corner}.png", corner, RED)  # mistakes: red is cat
    for name, colour in (("dog", GREEN), ("fox", BLUE)):
        _picture(data / "train" / name / "x.png", "top_left", colour)
    _picture(data / "val" / "fox" / "blue.png", "top_left", BLUE)
    (run / "config.toml").write_text(
        textwrap.dedent(f"""\
        data = "{data}"
        base = "colour_grid"
        head = "linear"
        epochs = 1
        image_size = 32
        seed = 0
        val_split = 0.2
        """)
    )
    images = root / "images"
    return {
        "run": run,
        "a": _picture(images / "top_left.png", "top_left"),
        "b": _picture(images / "bottom_right.png", "bottom_right"),
        "root": root,
    }


def test_cli_writes_one_overlay_per_image_and_an_index(trained, tmp_path):
    out = tmp_path / "why"
    result = invoke_tlkit("explain", trained["run"], trained["a"], trained["b"], "--output", out)
    assert result.returncode == 0, result.stderr
    index = json.loads((out / "explanations.json").read_text())
    assert index["method"] == "grad-cam" and index["layer"] == "colour_base/grid"  # the base's output
    assert [Path(i["image"]).name for i in index["images"]] == ["top_left.png", "bottom_right.png"]
    assert sorted(p.name for p in out.iterdir()) == [
        "bottom_right-gradcam.png",
        "explanations.json",
        "top_left-gradcam.png",
    ]
    for item in index["images"]:
        assert item["label"] == item["predicted"] == "cat" and 0.9 < item["prob"] <= 1
        with Image.open(out / item["file"]) as overlay:
            assert overlay.size == (48, 36) and overlay.mode == "RGB"  # the image's own size
    with Image.open(out / "top_left-gradcam.png") as overlay:
        pixels = np.asarray(overlay, dtype=np.int32)
    assert pixels[5, 5, 0] > pixels[30, 40, 0] + 60  # hot (red) where the red block is, cold elsewhere
    assert "top_left-gradcam.png" in result.stdout and "not registered here" in result.stdout
    # never written over: the same folder again is refused, and left as it was
    again = invoke_tlkit("explain", trained["run"], trained["a"], "--output", out)
    assert again.returncode == 1 and "already exists and is not empty" in again.stderr
    assert len(list(out.iterdir())) == 3


def test_heatmaps_find_what_the_model_saw(trained):
    result = tlkit.explain(trained["run"], [trained["a"], trained["b"]])
    assert result.output is None and all(e.file is None for e in result.explanations)
    first, second = (e.heatmap for e in result.explanations)
    assert first.shape == second.shape == (4, 4)  # the base's 4×4 output map
    assert first[:2, :2].min() > 0.9 and first[2:, 2:].max() < 0.1  # the red block: top left
    assert second[2:, 2:].min() > 0.9 and second[:2, :2].max() < 0.1  # ... bottom right

    asked = tlkit.explain(trained["run"], trained["a"], class_name="dog").explanations[0]
    assert (asked.label, asked.predicted) == ("dog", "cat") and asked.prob < asked.predicted_prob / 10
    assert asked.heatmap.max() == 0  # nothing green: no evidence for dog anywhere

    fine = tlkit.explain(trained["run"], trained["a"], layer="detect")  # a layer inside the base
    assert fine.layer == "colour_base/detect" and fine.explanations[0].heatmap.shape == (32, 32)
    assert fine.explanations[0].heatmap[:16, :16].mean() > 0.9 and fine.explanations[0].heatmap[16:, :].max() < 0.1


def test_unreadable_images_are_skipped_and_bad_input_is_one_line(trained, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    out = tmp_path / "out"
    ok = invoke_tlkit("explain", trained["run"], trained["a"], broken, "--output", out, "--json")
    assert ok.returncode == 0 and "Skipped" in ok.stderr and "broken.jpg" in ok.stderr
    index = json.loads((out / "explanations.json").read_text())
    assert len(index["images"]) == 1 and Path(index["skipped_images"][0]["path"]).name == "broken.jpg"

    cases = [
        ([trained["root"], trained["a"]], "not a tlkit run directory"),
        ([trained["run"], broken], "none of the 1 image file(s) could be read"),
        ([trained["run"], tmp_path / "nothing-*.png"], "matched nothing"),
        ([trained["run"], trained["a"], "--class", "dgo"], "--class 'dgo' is not one of the model's 3 classes"),
        (
            [trained["run"], trained["a"], "--layer", "detector"],
            "is not a layer of base 'colour_base'; did you mean 'detect'",
        ),
        ([trained["run"], trained["a"], "--output", trained["a"]], "is a file"),
    ]
    for args, message in cases:
        if "--output" not in args:
            args = [*args, "--output", tmp_path / "unused"]
        result = invoke_tlkit("explain", *args)
        assert result.returncode == 1, (args, result.stdout)
        assert message in result.stderr.replace("\n", "") and "Traceback" not in result.stderr, result.stderr
    assert not (tmp_path / "unused").exists()  # nothing half-written
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_report_shows_the_mistakes_explained_and_keeps_them(trained, monkeypatch):
    import keras

    from tlkit.evaluation.report import write_report
    from tlkit.inference.prediction import load_keras_model
    from tlkit.io.rundir import RunDir

    run = RunDir(trained["run"])
    html = write_report(run.path).read_text()  # evaluates first: the val/dog images are red → cat
    assert run.read_evaluation()["num_mistakes"] == 2
    assert 'id="explanations"' in html and html.count('<figure><img alt="Grad-CAM of red_') == 2
    assert run.explained_mistakes_path.is_file()

    model = load_keras_model(run.model_path)

    def refuse(*args, **kwargs):
        raise AssertionError("the report loaded the model again")

    monkeypatch.setattr(keras.saving, "load_model", refuse)
    again = write_report(run.path).read_text()  # `tlkit report` later: reuses the saved overlays
    assert again.count('<figure><img alt="Grad-CAM of red_') == 2
    run.explained_mistakes_path.unlink()
    fresh = write_report(run.path, model=model).read_text()  # training's end: the model in hand
    assert fresh.count('<figure><img alt="Grad-CAM of red_') == 2


def test_a_builtin_base_is_explained_at_its_output():
    from tlkit.evaluation.gradcam import GradCam, explanation_layer

    model = tlkit.build_model("mobilenet_v2", "linear", 3, image_size=64, weights="none")
    cam = GradCam(model, explanation_layer({"base": "mobilenet_v2"})[0])
    heatmaps, probs, _ = cam(np.zeros((1, 64, 64, 3), np.uint8))
    assert cam.layer_name.endswith("/out_relu") and heatmaps.shape == (1, 2, 2) and probs.shape == (1, 3)


def test_a_base_spec_explain_layer_is_honoured():
    import keras

    from tlkit.evaluation.gradcam import GradCam, explanation_layer
    from tlkit.model.builder import assemble
    from tlkit.registry.manager import get_registry

    def build(input_shape, weights=None):
        inputs = keras.Input(input_shape)
        x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="mid")(inputs)
        x = keras.layers.Conv2D(8, 3, strides=4, padding="same", activation="relu")(x)
        return keras.Model(inputs, keras.layers.MaxPooling2D(2, name="pooled")(x), name="tiny_cam")

    spec = tlkit.BaseSpec(name="tiny_cam", build=build, preprocess=list, description="test", explain_layer="mid")
    parts = assemble(spec, get_registry().head("linear"), 3, image_size=32, head_params={"dropout": 0.0})
    pixels = np.random.default_rng(0).integers(0, 255, (2, 32, 32, 3)).astype(np.uint8)
    heatmaps, probs, targets = GradCam(parts.model, spec.explain_layer)(pixels)
    assert heatmaps.shape == (2, 32, 32) and probs.shape == (2, 3) and list(targets) == list(probs.argmax(1))
    assert GradCam(parts.model)(pixels)[0].shape == (2, 4, 4)  # undeclared: the base's (pooled) output

    # the built-in VGGs declare their last conv (the base ends in a pooling); helpers pass it on
    assert explanation_layer({"base": "vgg16"}) == ("block5_conv3", None)
    assert explanation_layer({"base": "no_such_base"})[1].startswith("base 'no_such_base' is not registered")
    assert (
        tlkit.keras_application_base(
            "x", "VGG16", preprocessing="caffe", description="", explain_layer="b"
        ).explain_layer
        == "b"
    )
    with pytest.raises(TlkitError, match="no nested base model"):
        GradCam(keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten(), keras.layers.Dense(2)]))


def test_real_photos_with_imagenet_weights_are_explained_where_the_object_is():
    """torchvision's ImageNet MobileNetV2 (the tlkit-torchvision base, with its own classifier as
    the head): the espresso is found in the cup, the space shuttle at the right of the astronaut."""
    skimage_data = pytest.importorskip("skimage.data")
    pytest.importorskip("tlkit_torchvision")
    from tlkit.evaluation.gradcam import GradCam
    from tlkit.model.builder import assemble
    from tlkit.registry.manager import get_registry
    from tlkit_torchvision.pth import load_state_dict
    from tlkit_torchvision.weights import locate_weights

    weights = locate_weights()
    if weights is None:
        pytest.skip("torchvision's mobilenet_v2 .pth is not on this machine (see tlkit weights list)")
    registry = get_registry()
    parts = assemble(
        registry.base("tv_mobilenet_v2"),
        registry.head("linear"),
        1000,
        weights="imagenet",
        head_params={"dropout": 0.0},
    )
    state = load_state_dict(weights)
    parts.head.layers[-1].set_weights([state["classifier.1.weight"].T, state["classifier.1.bias"]])
    cam = GradCam(parts.model)

    def pixels(image):
        return np.asarray(Image.fromarray(image).resize((224, 224), Image.Resampling.BILINEAR))[None]

    heatmaps, _, predicted = cam(pixels(skimage_data.coffee()))
    centre = heatmaps[0][2:5, 2:5]
    assert predicted[0] == 967 and centre.mean() > 3 * (heatmaps[0].sum() - centre.sum()) / 40  # espresso: the cup

    astronaut = pixels(skimage_data.astronaut())
    shuttle = cam(astronaut, 812)[0][0]  # "space shuttle", top right of the photo
    best = cam(astronaut)[0][0]
    assert shuttle[:, 5:].sum() > 5 * shuttle[:, :2].sum() and best[:, :2].sum() > best[:, 5:].sum()
