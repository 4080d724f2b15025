"""Parameters, NAME:k=v parsing, and the TOML training config."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pytest

from tlkit import ParamSpec, TlkitError
from tlkit.config.options import (
    OPTIONS,
    PANELS,
    Option,
    TrainConfig,
    config_from_mapping,
    load_config_file,
    merge,
    to_toml,
)
from tlkit.io.toml import read_toml
from tlkit.registry.specs import format_choice, parse_assignments, parse_choice, resolve_params

PARAMS = (
    ParamSpec("units", (256,), kind="ints", ge=1),
    ParamSpec("dropout", 0.3, ge=0.0, le=0.99),
    ParamSpec("pooling", "avg", choices=("avg", "max")),
    ParamSpec("batchnorm", False),
    ParamSpec("depth", 2),
)


def test_params_parse_text_and_check_typed_values():
    got = resolve_params("head 'x'", PARAMS, {"units": "512,256", "dropout": "0.5", "batchnorm": "true"})
    assert got == {"units": (512, 256), "dropout": 0.5, "pooling": "avg", "batchnorm": True, "depth": 2}
    assert resolve_params("h", PARAMS, {"units": [64], "depth": 3})["units"] == (64,)


@pytest.mark.parametrize(
    "given, message",
    [
        (
            {"unit": "3"},
            "head 'x' has no parameter 'unit'; did you mean 'units'? "
            "(its parameters: units, dropout, pooling, batchnorm, depth)",
        ),
        ({"dropout": "abc"}, "head 'x': dropout='abc' is not a valid float"),
        ({"dropout": "1.5"}, "head 'x': dropout is out of range: 1.5 (must be <= 0.99)"),
        ({"dropout": "nan"}, "head 'x': dropout is out of range: nan (must be finite)"),
        ({"pooling": "mux"}, "head 'x': unknown pooling 'mux'; did you mean 'max'? (choose from avg, max)"),
        ({"units": "64,0"}, "head 'x': units must be a positive integer, got 0"),
        ({"units": [64, "x"]}, "head 'x': units=[64, 'x'] is not a valid ints"),
        ({"batchnorm": "maybe"}, "head 'x': batchnorm='maybe' is not a valid bool"),
        ({"depth": 2.5}, "head 'x': depth=2.5 is not a valid int"),
    ],
)
def test_bad_params_are_clear_errors(given, message):
    with pytest.raises(TlkitError) as caught:
        resolve_params("head 'x'", PARAMS, given)
    assert str(caught.value) == message


def test_an_option_and_a_plugin_param_share_one_rule_and_one_sentence():
    """The same bounds (ge/gt/le/lt) mean the same thing, and are refused in the same words,
    for a training option and a head's parameter (tlkit.registry.params.Rule)."""
    from tlkit.registry.params import Rule

    assert issubclass(Option, Rule) and issubclass(ParamSpec, Rule)
    epochs, momentum = OPTIONS["epochs"], OPTIONS["momentum"]
    units = ParamSpec("units", 8, ge=epochs.ge)  # epochs: ge=1
    dropout = ParamSpec("dropout", 0.5, ge=momentum.ge, le=momentum.le)  # momentum: ge=0, le=1
    cases = [
        (epochs, units, 0, "must be a positive integer, got 0"),
        (momentum, dropout, 2.0, "is out of range: 2.0 (must be <= 1)"),
    ]
    for option, spec, value, sentence in cases:
        with pytest.raises(TlkitError) as by_option:
            merge(TrainConfig(), {option.name: value}).validate()
        with pytest.raises(TlkitError) as by_param:
            resolve_params("head 'h'", (spec,), {spec.name: str(value)})
        assert str(by_option.value) == f"{option.cli_flag} {sentence}"
        assert str(by_param.value) == f"head 'h': {spec.name} {sentence}"
    # and choices: the same "unknown …; did you mean …" sentence
    pooling = ParamSpec("pooling", "avg", choices=("avg", "max"))
    with pytest.raises(
        TlkitError, match=r"^head 'h': unknown pooling 'mux'; did you mean 'max'\? \(choose from avg, max\)$"
    ):
        resolve_params("head 'h'", (pooling,), {"pooling": "mux"})
    with pytest.raises(TlkitError, match=r"^unknown --schedule 'cosne'; did you mean 'cosine'\? \(choose from "):
        merge(TrainConfig(), {"schedule": "cosne"}).validate()


def test_old_param_spellings_warn_and_still_work():
    import tlkit

    with pytest.warns(DeprecationWarning, match="tlkit.ParamSpec"):
        old = tlkit.Param("units", (256,), "widths", kind="ints", min=1)
    assert old == ParamSpec("units", (256,), help="widths", kind="ints", ge=1)
    with pytest.warns(DeprecationWarning, match="ge= .* and le="):
        marker = tlkit.param("dropout rate", min=0.0, max=0.99)
    assert marker == tlkit.Param("dropout rate", ge=0.0, le=0.99)
    with pytest.warns(DeprecationWarning, match="ge= .* and le="):
        assert tlkit.Param("rate", min=0, max=1) == tlkit.Param("rate", ge=0, le=1)
    with pytest.raises(TypeError, match="not both"), pytest.warns(DeprecationWarning):
        tlkit.Param("rate", min=0, ge=1)


def test_choice_syntax_roundtrip():
    assert parse_choice("rotation", "--aug") == ("rotation", {})
    assert parse_choice("mlp:units=512,256,dropout=0.3", "--aug") == ("mlp", {"units": "512,256", "dropout": "0.3"})
    assert format_choice("mlp", {"units": (512, 256), "batchnorm": False}) == "mlp:units=512,256,batchnorm=false"
    with pytest.raises(TlkitError, match="not key=value"):
        parse_assignments("factor", "--aug rotation")
    with pytest.raises(TlkitError, match="missing name"):
        parse_choice(":factor=1", "--aug")


def test_config_toml_roundtrip(tmp_path):
    config = merge(
        TrainConfig(),
        {
            "data": '/data/with "quotes"',
            "head": "mlp",
            "head_params": {"units": (512, 256), "dropout": 0.3},
            "augmentations": ["rotation:factor=0.1,fill_mode=reflect", "flip_horizontal"],
            "lr": 1e-4,
            "skip_bad_images": True,
        },
    )
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


def test_paths_are_accepted_where_a_string_is(tmp_path):
    config = config_from_mapping({"data": tmp_path / "data", "output": tmp_path / "runs"})
    assert config.data == str(tmp_path / "data") and config.output == str(tmp_path / "runs")
    with pytest.raises(TlkitError, match="data in config must be a string"):
        config_from_mapping({"data": 3})


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


# Every rule of TrainConfig.validate() with the exact message users see (the rules are
# generated from the field metadata; these pin that nothing changed in the process).
@pytest.mark.parametrize(
    "change, message",
    [
        ({"batch_size": 0}, "--batch-size must be a positive integer, got 0"),
        ({"lr": math.inf}, "--lr must be a positive number, got inf"),
        ({"lr": 0.0}, "--lr must be a positive number, got 0.0"),
        (
            {"optimizer": "adamm"},
            "unknown optimizer 'adamm'; did you mean 'adam' or 'adamw'? (choose from adam, sgd, rmsprop, adamw)",
        ),
        ({"loss": "mse"}, "unknown loss 'mse' (choose from categorical_crossentropy, focal, mean_squared_error)"),
        ({"image_size": -1}, "--image-size must be a positive integer, got -1"),
        ({"val_split": 0.0}, "--val-split must be between 0 and 1 (exclusive), got 0.0"),
        ({"aug_views": -1}, "--aug-views must be 0 or a positive integer, got -1"),
        ({"engine": "onnx"}, "unknown --engine 'onnx'"),
        ({"warmup_epochs": -1}, "--warmup-epochs must be 0 or a positive integer, got -1"),
        ({"patience": -2}, "--patience must be 0 or a positive integer, got -2"),
        ({"reduce_lr_patience": -1}, "--reduce-lr-patience must be 0 or a positive integer, got -1"),
        ({"fine_tune_epochs": -1}, "--fine-tune-epochs must be 0 or a positive integer, got -1"),
        ({"decay_epochs": 0}, "--decay-epochs must be a positive integer, got 0"),
        ({"top_k": 0}, "--top-k must be a positive integer, got 0"),
        (
            {"schedule": "cosne"},
            "unknown --schedule 'cosne'; did you mean 'cosine'? (choose from constant, cosine, exponential, step)",
        ),
        ({"monitor": "loss"}, "unknown --monitor 'loss'"),
        ({"metrics": ["accuracy", "auc"]}, "unknown --metrics 'auc'"),
        ({"fine_tune_lr": 0.0}, "--fine-tune-lr is out of range: 0.0 (must be > 0)"),
        ({"weight_decay": -0.1}, "--weight-decay is out of range: -0.1 (must be >= 0)"),
        ({"weight_decay": math.inf}, "--weight-decay is out of range: inf (must be finite)"),
        ({"momentum": 1.5}, "--momentum is out of range: 1.5 (must be <= 1)"),
        ({"momentum": -0.1}, "--momentum is out of range: -0.1 (must be >= 0)"),
        ({"label_smoothing": 1.01}, "--label-smoothing is out of range: 1.01 (must be <= 1)"),
        ({"decay_rate": 0.0}, "--decay-rate is out of range: 0.0 (must be > 0)"),
        ({"reduce_lr_factor": 1.0}, "--reduce-lr-factor is out of range: 1.0 (must be < 1)"),
        ({"reduce_lr_factor": 0.0}, "--reduce-lr-factor is out of range: 0.0 (must be > 0)"),
        ({"fbeta": 0.0}, "--fbeta is out of range: 0.0 (must be > 0)"),
        ({"focal_gamma": -1.0}, "--focal-gamma is out of range: -1.0 (must be >= 0)"),
        ({"monitor": "val_f1", "metrics": ["accuracy"]}, "--monitor val_f1 needs the f1 metric: add f1 to --metrics"),
        (
            {"reduce_lr_patience": 2, "schedule": "cosine"},
            "--reduce-lr-patience works with --schedule constant and no warm-up; "
            "got --schedule cosine --warmup-epochs 0",
        ),
        ({"reduce_lr_patience": 2, "warmup_epochs": 1}, "got --schedule constant --warmup-epochs 1"),
        ({"class_weight": "heavy"}, "--class-weight must be none, balanced or a .json file, got 'heavy'"),
        ({"seed": -1}, "--seed must be a non-negative integer, got -1"),
    ],
)
def test_every_validation_rule_keeps_its_message(change, message):
    with pytest.raises(TlkitError) as caught:
        merge(TrainConfig(), change).validate()
    assert message in str(caught.value)


@pytest.mark.parametrize(
    "change",
    [
        {"image_size": 0},
        {"aug_views": 0},
        {"patience": 0},
        {"momentum": 0.0},
        {"momentum": 1.0},
        {"label_smoothing": 1.0},
        {"decay_rate": 1.0},
        {"weight_decay": 0.0},
        {"focal_gamma": 0.0},
        {"val_split": 0.5},
        {"reduce_lr_patience": 3},
        {"class_weight": "balanced"},
        {"class_weight": "w.json"},
        {"metrics": ["accuracy", "top_k", "precision", "recall", "f1", "fbeta"]},
        {"monitor": "val_loss", "metrics": []},
        {"engine": "tensorflow"},
        {"optimizer": "adamw"},
    ],
)
def test_values_on_the_edge_of_a_range_are_accepted(change):
    merge(TrainConfig(), change).validate()


# -- tlkit train's options are generated from the TrainConfig fields

# The flags as they were written by hand before they were generated: none may change.
TRAIN_FLAGS = {
    "--data",
    "--val-split",
    "--skip-bad-images",
    "--stop-on-bad-images",
    "--class-weight",
    "--base",
    "--weights",
    "--image-size",
    "--head",
    "--head-param",
    "--aug",
    "--epochs",
    "--batch-size",
    "--optimizer",
    "--lr",
    "--momentum",
    "--nesterov",
    "--no-nesterov",
    "--weight-decay",
    "--schedule",
    "--warmup-epochs",
    "--decay-rate",
    "--decay-epochs",
    "--loss",
    "--label-smoothing",
    "--focal-gamma",
    "--metrics",
    "--top-k",
    "--fbeta",
    "--seed",
    "--deterministic",
    "--no-deterministic",
    "--monitor",
    "--patience",
    "--reduce-lr-patience",
    "--reduce-lr-factor",
    "--fine-tune-epochs",
    "--unfreeze",
    "--fine-tune-lr",
    "--feature-cache",
    "--no-feature-cache",
    "--aug-views",
    "--engine",
    "--output",
    "--config",
    "--resume",
    "--print-config",
    "--quiet",
    "-q",
    "--json",
    # added since, for scale-out (docs/scaling.md)
    "--strategy",
    "--per-replica-batch",
    "--global-batch",
    "--precision",
    "--feature-dtype",
    "--labels",
    "--multi-label",
    "--no-multi-label",
    "--label-sep",
    "--threshold",
    # experiment tracking (docs/tracking.md)
    "--track",
    "--track-uri",
    "--register-model",
}


def _train_command():
    import typer.main

    from tlkit.cli.app import app

    return typer.main.get_command(app).commands["train"]


def test_every_config_field_is_a_train_flag():
    params = {param.name: param for param in _train_command().params}
    for f in dataclasses.fields(TrainConfig):
        assert f.name in params, f"TrainConfig.{f.name} is not an option of `tlkit train`"
        param, meta = params[f.name], OPTIONS[f.name]
        assert [*param.opts, *param.secondary_opts] == meta.flags.split("/")
        assert param.default is None, "an option left out must not override the --config file"
        assert param.rich_help_panel == meta.panel
    flags = {flag for param in params.values() for flag in (*param.opts, *param.secondary_opts)}
    assert flags == TRAIN_FLAGS


def test_train_help_shows_panels_and_defaults_from_the_dataclass():
    from typer.testing import CliRunner

    from tlkit.cli.app import app

    result = CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for panel in PANELS:
        assert f"─ {panel} ─" in result.output
    for name in ("batch_size", "lr", "metrics", "feature_cache", "optimizer"):
        line = next(line for line in result.output.splitlines() if OPTIONS[name].cli_flag + " " in line)
        assert f"(default: {OPTIONS[name].default_text()})" in line
    assert "(default: 32)" in result.output and "(default: accuracy,f1)" in result.output


def _non_default(meta: Option) -> tuple[list[str], Any]:
    """Command-line arguments that set ``meta``'s option to a value other than its default, and that value."""
    flag = meta.cli_flag
    if meta.kind is bool:
        return [meta.flags.split("/")[0 if not meta.default else 1]], not meta.default
    if meta.kind is dict:
        return [flag, "units=7", flag, "dropout=0.25"], {"units": "7", "dropout": "0.25"}
    if meta.kind is list:
        values = list(meta.choices[-2:]) or ["flip_horizontal", "zoom:factor=0.1"]
        args = [flag, meta.separator.join(values)] if meta.separator else [a for v in values for a in (flag, v)]
        return args, values
    if meta.kind in (int, float):
        value = meta.default + (1 if meta.kind is int else 0.125)
        return [flag, str(value)], value
    value = [c for c in meta.choices if c != meta.default][-1] if meta.choices else f"/tmp/x-{meta.name}"
    return [flag, value], value


def test_every_flag_reaches_its_config_key(monkeypatch, tmp_path):
    """Each option given on the command line ends up in the configuration, under its own key."""
    from typer.testing import CliRunner

    from tlkit import api
    from tlkit.cli.app import app

    # Only the passing-through is tested here: skip name resolution and validation.
    monkeypatch.setattr(api, "resolve_config", lambda config, **options: merge(config or TrainConfig(), options))
    args, expected = [], {}
    for name, meta in OPTIONS.items():
        more, expected[name] = _non_default(meta)
        args += more
    result = CliRunner().invoke(app, ["train", *args, "--print-config"], env={"COLUMNS": "500"})
    assert result.exit_code == 0, result.output
    (tmp_path / "printed.toml").write_text(result.output)
    printed = read_toml(tmp_path / "printed.toml")
    assert {name: printed[name] for name in OPTIONS} == expected


def test_resume_refuses_other_options():
    from typer.testing import CliRunner

    from tlkit.cli.app import app

    result = CliRunner().invoke(
        app,
        [
            "train",
            "--resume",
            "runs/x",
            "--epochs",
            "3",
            "--data",
            "d",
            "--no-feature-cache",
            "--head-param",
            "units=3",
        ],
    )
    assert result.exit_code == 1
    assert "drop the other options (data, epochs, feature_cache, head_params)" in " ".join(result.output.split())


def test_head_params_merge_with_the_config_file_for_the_same_head():
    from tlkit.cli.train import _head_params

    file = merge(TrainConfig(), {"head": "mlp", "head_params": {"units": [64], "dropout": 0.2}})
    assert _head_params(["dropout=0.4"], None, file) == {"units": [64], "dropout": "0.4"}
    assert _head_params(["dropout=0.4"], "mlp", file) == {"units": [64], "dropout": "0.4"}
    assert _head_params(["units=8"], "dense256", file) == {"units": "8"}  # another head: its own defaults
    assert _head_params(None, "dense256", file) == {}
    assert _head_params(None, "mlp", file) is None and _head_params(None, None, file) is None
    assert _head_params(["units=8", "dropout=0.1"], None, None) == {"units": "8", "dropout": "0.1"}


def test_read_toml(tmp_path):
    good = tmp_path / "good.toml"
    good.write_text('a = 1\n[t]\nb = "x"\n')
    assert read_toml(good) == {"a": 1, "t": {"b": "x"}}
    bad = tmp_path / "bad.toml"
    bad.write_text("a = = 1\n")
    for path, message in ((bad, "is not valid TOML"), (tmp_path / "missing.toml", "cannot read")):
        with pytest.raises(TlkitError, match=message) as caught:
            read_toml(path)
        assert "\n" not in str(caught.value)


def test_choice_names_other_modules_import_come_from_the_fields():
    from tlkit.config import options as config

    assert config.ENGINES == OPTIONS["engine"].choices == ("auto", "onnxruntime", "tensorflow")
    assert config.OPTIMIZERS == OPTIONS["optimizer"].choices
    assert (config.LOSSES, config.MONITORS) == (OPTIONS["loss"].choices, OPTIONS["monitor"].choices)
