"""Parameters, NAME:k=v parsing, and the TOML training config."""

from __future__ import annotations

import pytest

from tlkit import Param, TlkitError
from tlkit.config import TrainConfig, config_from_mapping, load_config_file, merge, to_toml
from tlkit.specs import format_choice, parse_assignments, parse_choice, resolve_params

PARAMS = (
    Param("units", (256,), kind="ints", min=1),
    Param("dropout", 0.3, min=0.0, max=0.99),
    Param("pooling", "avg", choices=("avg", "max")),
    Param("batchnorm", False),
    Param("depth", 2),
)


def test_params_parse_text_and_check_typed_values():
    got = resolve_params("head 'x'", PARAMS, {"units": "512,256", "dropout": "0.5", "batchnorm": "true"})
    assert got == {"units": (512, 256), "dropout": 0.5, "pooling": "avg", "batchnorm": True, "depth": 2}
    assert resolve_params("h", PARAMS, {"units": [64], "depth": 3})["units"] == (64,)


@pytest.mark.parametrize(
    "given, message",
    [
        ({"unit": "3"}, "no parameter 'unit'; did you mean 'units'"),
        ({"dropout": "abc"}, "not a valid float"),
        ({"dropout": "1.5"}, "must be <= 0.99"),
        ({"pooling": "min"}, "must be one of: avg, max"),
        ({"units": "0"}, "must be >= 1"),
        ({"batchnorm": "maybe"}, "not a valid bool"),
        ({"depth": 2.5}, "not a valid int"),
    ],
)
def test_bad_params_are_clear_errors(given, message):
    with pytest.raises(TlkitError, match=message):
        resolve_params("head 'x'", PARAMS, given)


def test_choice_syntax_roundtrip():
    assert parse_choice("rotation", "--aug") == ("rotation", {})
    assert parse_choice("mlp:units=512,256,dropout=0.3", "--aug") == (
        "mlp", {"units": "512,256", "dropout": "0.3"})
    assert format_choice("mlp", {"units": (512, 256), "batchnorm": False}) == "mlp:units=512,256,batchnorm=false"
    with pytest.raises(TlkitError, match="not key=value"):
        parse_assignments("factor", "--aug rotation")
    with pytest.raises(TlkitError, match="missing name"):
        parse_choice(":factor=1", "--aug")


def test_config_toml_roundtrip(tmp_path):
    config = merge(TrainConfig(), {
        "data": '/data/with "quotes"', "head": "mlp", "head_params": {"units": (512, 256), "dropout": 0.3},
        "augmentations": ["rotation:factor=0.1,fill_mode=reflect", "flip_horizontal"], "lr": 1e-4,
        "skip_bad_images": True,
    })
    path = tmp_path / "config.toml"
    path.write_text(to_toml(config, {"version": "0.1.0"}))
    loaded = load_config_file(path)
    assert loaded.head_params == {"units": [512, 256], "dropout": 0.3}
    assert loaded.augmentations == config.augmentations
    assert (loaded.data, loaded.lr, loaded.skip_bad_images) == (config.data, 1e-4, True)


def test_config_errors(tmp_path):
    with pytest.raises(TlkitError, match="unknown key 'epoch'.*did you mean 'epochs'"):
        config_from_mapping({"epoch": 3})
    with pytest.raises(TlkitError, match="epochs in config must be an integer"):
        config_from_mapping({"epochs": "3"})
    bad = tmp_path / "bad.toml"
    bad.write_text("epochs = = 3\n")
    with pytest.raises(TlkitError, match="not valid TOML"):
        load_config_file(bad)
    with pytest.raises(TlkitError, match="does not exist"):
        load_config_file(tmp_path / "missing.toml")


@pytest.mark.parametrize(
    "change, message",
    [
        ({"epochs": 0}, "--epochs must be a positive integer"),
        ({"lr": -1.0}, "--lr must be a positive number"),
        ({"optimizer": "adamm"}, "did you mean 'adam'"),
        ({"loss": "mse"}, "unknown loss"),
        ({"val_split": 1.0}, "--val-split must be between 0 and 1"),
    ],
)
def test_config_validation(change, message):
    with pytest.raises(TlkitError, match=message):
        merge(TrainConfig(), change).validate()
