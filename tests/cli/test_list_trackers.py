"""``tlkit list-trackers``, and trackers in ``tlkit plugins`` and ``tlkit info`` (no MLflow imported)."""

from __future__ import annotations

import json

from tests.support import invoke_tlkit


def test_list_trackers_shows_the_builtin_mlflow_tracker():
    listed = invoke_tlkit("list-trackers", "--json")
    assert listed.returncode == 0, listed.stderr
    (mlflow,) = [row for row in json.loads(listed.stdout) if row["name"] == "mlflow"]
    assert mlflow["plugin"] == "builtin_trackers" and mlflow["requires"] == "mlflow"
    assert mlflow["install"] == "tlkit[mlflow]" and mlflow["available"] is True
    table = invoke_tlkit("list-trackers")
    assert table.returncode == 0 and "mlflow" in table.stdout and "--track NAME" in table.stdout


def test_plugins_and_info_know_trackers():
    plugins = json.loads(invoke_tlkit("plugins", "--json").stdout)
    (builtin,) = [p for p in plugins if p["name"] == "builtin_trackers"]
    assert builtin["hooks"] == ["register_trackers"] and builtin["registered"] == ["tracker:mlflow"]
    assert builtin["builtin"] is True and builtin["errors"] == []
    (info,) = json.loads(invoke_tlkit("info", "mlflow", "--json").stdout)
    assert info["kind"] == "tracker" and info["install"] == "tlkit[mlflow]"
    shown = invoke_tlkit("info", "mlflow")
    assert "tlkit[mlflow]" in shown.stdout  # not eaten as rich markup


def test_train_takes_the_tracking_options():
    shown = invoke_tlkit("train", "--help")
    assert "--track " in shown.stdout and "--track-uri" in shown.stdout and "--register-model" in shown.stdout
    refused = invoke_tlkit("train", "--data", ".", "--register-model", "m", "--weights", "none")
    assert refused.returncode == 1
    assert "--register-model needs a tracker: add --track mlflow" in refused.stderr
