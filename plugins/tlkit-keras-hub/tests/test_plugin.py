"""The plugin as installed, without TensorFlow: entry point, registry, listing, hub: names, presets on disk."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
import textwrap
from importlib import metadata

import pytest
from tlkit_keras_hub import CURATED, presets
from tlkit_keras_hub.catalog import archive_name

import tlkit
from tlkit.registry.manager import Registry


def _run(code: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=timeout
    )


def test_listing_and_resolving_import_neither_keras_hub_nor_tensorflow():
    result = _run("""
        import sys, time
        from typer.testing import CliRunner
        from tlkit.cli import app
        started = time.perf_counter()
        for args in (["list-bases", "--json"], ["info", "dinov2_small"], ["info", "hub:dinov2_large+pooled"]):
            res = CliRunner().invoke(app, args)
            assert res.exit_code == 0, res.output
        heavy = [m for m in ("tensorflow", "keras", "keras_hub", "numpy") if m in sys.modules]
        print(",".join(heavy))
    """)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "", f"listing imported {result.stdout.strip()}"


def test_entry_point_is_installed():
    eps = [ep for ep in metadata.entry_points(group="tlkit") if ep.name == "keras_hub"]
    assert len(eps) == 1 and eps[0].value == "tlkit_keras_hub" and eps[0].dist.name == "tlkit-keras-hub"


def test_the_curated_bases_and_their_pooled_variants():
    registry = Registry()
    names = {name for name, spec in registry.bases.items() if spec.plugin == "keras_hub"}
    grids = {c.name for c in CURATED}
    pooled = {c.name + "_pooled" for c in CURATED if c.transformer}
    assert names == grids | pooled
    assert {"dinov2_small", "dinov2_base", "deit_small", "vit_base", "efficientnetv2_rw_s", "resnet50_a1"} <= names
    small = registry.base("dinov2_small")
    assert small.weights_file == "keras_hub-dinov2_small.tar" == registry.base("dinov2_small_pooled").weights_file
    assert small.weights_source.startswith("kaggle://keras/dinov2/keras/dinov2_small/1")
    assert small.weight_folders and "hf" in small.weight_schemes and "kaggle" in small.weight_schemes
    assert small.feature_shape == "16×16×384 patch tokens at 224 px" and small.explain_layer == ""
    assert registry.base("dinov2_small_pooled").explain_layer == "patch_grid"
    assert registry.base("vit_base").weights_sizes == (224,)  # fixed position embeddings
    assert registry.base("resnet50_a1").weights_source.startswith("hf://timm/resnet50.a1_in1k")


def test_list_bases_and_info_show_them_with_the_plugin_and_the_preset():
    result = subprocess.run(
        [sys.executable, "-m", "tlkit", "list-bases", "--json"], capture_output=True, text=True, timeout=60
    )
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert rows["dinov2_base"]["plugin"] == "keras_hub" and rows["dinov2_base"]["param_count"] == 86_777_856
    assert rows["mobilenetv3_large_100"]["weights_source"].startswith("kaggle://keras/mobilenetv3/")
    assert rows["efficientnetv2_rw_s"]["default_size"] == 288
    assert not rows["deit_small"]["imagenet_weights_cached"]


def test_hub_names_resolve_on_demand(tiny_presets):
    registry = Registry()
    spec = registry.base("hub:hf://timm/convnext_tiny.fb_in1k")
    assert spec.plugin == "keras_hub" and spec.weights_source == "hf://timm/convnext_tiny.fb_in1k"
    assert spec.weights_file == archive_name("hf://timm/convnext_tiny.fb_in1k")
    folder = registry.base(f"hub:{tiny_presets['vit']}+pooled")  # the folder's own config says what it is
    assert "ViTBackbone" in folder.description and folder.weights_sizes == (32,) and folder.default_size == 32
    assert folder.explain_layer == "patch_grid" and folder.param_count > 0
    with pytest.raises(tlkit.TlkitError, match="put a KerasHub preset, handle or preset folder after 'hub:'"):
        registry.base("hub:")
    with pytest.raises(tlkit.TlkitError, match="is not a folder"):
        registry.base("hub:/no/such/preset")
    with pytest.raises(tlkit.TlkitError, match="unknown base 'dinov2_smal'.*dinov2_small"):
        registry.base("dinov2_smal")


def test_the_architecture_of_a_preset_folder_is_checked_before_any_work(tiny_presets, image_folder, tmp_path):
    from tlkit.config.resolve import resolve_config

    def resolve(base, weights):
        return resolve_config(data=str(image_folder), base=base, weights=weights, output=str(tmp_path / "runs"))

    with pytest.raises(
        tlkit.TlkitError, match=r"holds a KerasHub DINOV2Backbone, not the ResNetBackbone base 'resnet50_a1'"
    ):
        resolve("resnet50_a1", str(tiny_presets["dino"]))
    with pytest.raises(tlkit.TlkitError, match="is not a KerasHub preset \\(no config.json\\)"):
        resolve("dinov2_small", str(tmp_path))
    with pytest.raises(tlkit.TlkitError, match="is a folder, which base 'mobilenet_v2' does not read"):
        resolve("mobilenet_v2", str(tiny_presets["dino"]))
    config = resolve("dinov2_small", str(tiny_presets["dino"]))
    assert config.weights == str(tiny_presets["dino"].resolve()) and config.image_size == 224
    assert resolve("dinov2_small", "hf://facebook/dinov2-small").weights == "hf://facebook/dinov2-small"
    assert not (tmp_path / "runs").exists()


def test_backbone_class_of_keras_timm_and_transformers_configs():
    assert presets.backbone_class({"class_name": "DINOV2Backbone", "config": {}}) == "DINOV2Backbone"
    assert presets.backbone_class({"architecture": "resnet50"}) == "ResNetBackbone"
    assert presets.backbone_class({"architecture": "efficientnetv2_rw_s"}) == "EfficientNetBackbone"
    assert presets.backbone_class({"architecture": "mobilenetv3_large_100"}) == "MobileNetBackbone"
    assert presets.backbone_class({"model_type": "dinov2_with_registers"}) == "DINOV2Backbone"
    assert presets.backbone_class({"model_type": "bert"}) is None
    assert presets.fixed_size({"model_type": "vit", "image_size": 224}) == 224
    assert presets.fixed_size({"model_type": "dinov2", "image_size": 518}) is None


def test_preprocessing_read_from_converter_timm_and_hugging_face_configs(tmp_path):
    converter, timm, hf = (tmp_path / name for name in ("converter", "timm", "hf"))
    for folder in (converter, timm, hf):
        folder.mkdir()
    (converter / "image_converter.json").write_text(json.dumps({"config": {"scale": 1 / 127.5, "offset": -1.0}}))
    (timm / "config.json").write_text(
        json.dumps({"architecture": "resnet50", "pretrained_cfg": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.5, 1.0]}})
    )
    (hf / "preprocessor_config.json").write_text(
        json.dumps({"image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225], "rescale_factor": 1 / 255})
    )
    assert presets.scale_offset(converter) == ([1 / 127.5] * 3, [-1.0] * 3)
    scale, offset = presets.scale_offset(timm)
    assert scale == pytest.approx([4 / 255, 2 / 255, 1 / 255]) and offset == pytest.approx([-2.0, -1.0, -0.5])
    scale, offset = presets.scale_offset(hf)
    assert scale[0] == pytest.approx(1 / 255 / 0.229) and offset[2] == pytest.approx(-0.406 / 0.225)
    assert presets.scale_offset(tmp_path) is None


def test_archives_round_trip_and_read_tar_c_folders(tiny_presets, tmp_path):
    packed = presets.pack(tiny_presets["dino"], tmp_path / "a.tar")
    assert presets.read_json(packed, "config.json")["class_name"] == "DINOV2Backbone"
    with tarfile.open(tmp_path / "b.tar", "w") as tar:  # `tar -cf b.tar -C folder .` writes ./name
        tar.add(tiny_presets["vit"], arcname=".")
    out = tmp_path / "out"
    out.mkdir()
    presets.unpack(tmp_path / "b.tar", out)
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in tiny_presets["vit"].iterdir())
    bad = tmp_path / "bad.tar"
    with tarfile.open(bad, "w") as tar:
        tar.add(tiny_presets["vit"] / "metadata.json", arcname="metadata.json")
    with pytest.raises(tlkit.TlkitError, match="holds no config.json"):
        presets.unpack(bad, out)
