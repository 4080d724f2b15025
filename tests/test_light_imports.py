"""What must stay light: importing tlkit, listing, and the modules light commands load never import
TensorFlow, Keras or matplotlib (each case runs in a fresh interpreter; one check, parametrised)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

HEAVY = ("tensorflow", "keras", "matplotlib", "onnx", "h5py", "mlflow", "keras_hub")

CASES = {
    "import tlkit": "import tlkit",
    "the built-in bases as specs": """
        import tlkit_builtins.bases as bases
        import tlkit.bases
        assert len(bases.BASES) == 21 and all(s.param_count for s in bases.BASES)
        tlkit.keras_application_base("x", "NASNetMobile", preprocessing="tf", description="x")
    """,
    "data modules": "import tlkit.data.folders, tlkit.data.decode, tlkit.data.pipelines, tlkit.data.labels_csv",
    "feature modules": "import tlkit.features.store, tlkit.features.plan, tlkit.features.shards, tlkit.features.dataset",
    "evaluation modules": """
        import tlkit.evaluation.evaluate, tlkit.inference.prediction, tlkit.evaluation.report
        import tlkit.evaluation.compare, tlkit.evaluation.figures, tlkit.cli.evaluate
    """,
    "export modules": "import tlkit.exporting.exporter, tlkit.cli.export",
    "listing commands": """
        from typer.testing import CliRunner
        from tlkit.cli import app
        for args in (
            ["list-bases"], ["list-heads"], ["list-augmentations"], ["list-trackers"], ["plugins"],
            ["info", "resnet50"], ["info", "mlflow"],
        ):
            res = CliRunner().invoke(app, args)
            assert res.exit_code == 0, res.output
    """,
    "weights list": """
        from typer.testing import CliRunner
        from tlkit.cli import app
        res = CliRunner().invoke(app, ["weights", "list", "--json"])
        assert res.exit_code == 0, res.output
    """,
    "serve --help and the API without the server": """
        import sys
        from typer.testing import CliRunner
        from tlkit.cli import app
        import tlkit.api
        res = CliRunner().invoke(app, ["serve", "--help"])
        assert res.exit_code == 0 and "--max-wait-ms" in res.output, res.output
        loaded = {"fastapi", "uvicorn", "starlette", "python_multipart"} & set(sys.modules)
        assert not loaded, f"imported {loaded}"
    """,
    "resolving a config": """
        from tlkit.api import resolve_config
        from tlkit.config.options import TrainConfig
        resolve_config(TrainConfig(data=".", base="mobilenet_v2", weights="none"))
    """,
    "resolving a tracked config (MLflow is imported only once the run starts)": """
        from tlkit.api import resolve_config
        from tlkit.config.options import TrainConfig
        resolve_config(TrainConfig(data=".", base="mobilenet_v2", weights="none", track=["mlflow"]))
    """,
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_stays_light(case, tmp_path):
    code = textwrap.dedent(CASES[case]) + (
        f"\nimport sys\nheavy = [m for m in {HEAVY!r} if m in sys.modules]\nassert not heavy, f'imported {{heavy}}'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
