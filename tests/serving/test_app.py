"""tlkit serve's app through FastAPI's TestClient on a real run (and its TFLite export): the same numbers
as ``tlkit predict --json``, every bad input refused with a 4xx naming the file while the server keeps
answering, uploads never on disk, concurrent requests micro-batched, metadata, Grad-CAM, offline docs."""

from __future__ import annotations

import base64
import io
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from tests.serving.test_uploads import png, png_claiming
from tlkit.inference.prediction import predict
from tlkit.serving.app import create_app
from tlkit.serving.model import ServedModel
from tlkit.serving.options import ServeOptions


@pytest.fixture(scope="module")
def served(run_dir) -> ServedModel:
    return ServedModel.load(run_dir)


@contextmanager
def client(served: ServedModel, **options):
    with TestClient(create_app(served, ServeOptions.make(**options))) as test_client:
        yield test_client


def parts(*paths: Path) -> list:
    return [("files", (p.name, p.read_bytes(), "image/png")) for p in paths]


def assert_same(answers: list[dict], expected: dict[str, dict]) -> None:
    """Same labels in the same order, probabilities equal to 1e-6 (batch composition may move the last bits)."""
    assert answers
    for answer in answers:
        reference = expected[answer["path"]]
        assert answer.keys() == reference.keys() and answer["error"] is None
        assert [t["label"] for t in answer["top"]] == [t["label"] for t in reference["top"]]
        np.testing.assert_allclose([t["prob"] for t in answer["top"]], [t["prob"] for t in reference["top"]], atol=1e-6)


def test_predict_answers_what_tlkit_predict_prints(served, images, expected):
    with client(served) as c:
        multipart = c.post("/predict", files=parts(*images))
        assert multipart.status_code == 200, multipart.text
        answers = multipart.json()["predictions"]
        assert [a["path"] for a in answers] == [p.name for p in images]  # the request's order
        assert_same(answers, expected)
        body = {"images": [{"name": p.name, "data": base64.b64encode(p.read_bytes()).decode()} for p in images]}
        as_json = c.post("/predict", json=body)
        assert as_json.status_code == 200
        assert_same(as_json.json()["predictions"], expected)
        top1 = c.post("/predict?top_k=1", files=parts(images[0])).json()["predictions"][0]
        assert [t["label"] for t in top1["top"]] == [expected[images[0].name]["label"]]


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_every_bad_input_is_a_4xx_naming_the_file_and_the_server_keeps_answering(served, images, expected):
    good = images[0].read_bytes()
    multipart = "multipart/form-data; boundary=B"

    def chunked_body():  # no Content-Length: the cap is found while reading, inside big.png
        yield b'--B\r\nContent-Disposition: form-data; name="files"; filename="big.png"\r\n\r\n'
        for _ in range(10):
            yield b"\0" * 10_000
        yield b"\r\n--B--\r\n"

    bad = [
        (dict(files=[("files", ("notes.txt", b"just text", "text/plain"))]), 422, "notes.txt", "not a readable image"),
        (dict(files=[("files", ("cut.png", good[: len(good) // 2], "image/png"))]), 422, "cut.png", "truncated"),
        (dict(files=[("files", ("bomb.png", png_claiming(100_000, 100_000), "image/png"))]), 422, "bomb.png", "bomb"),
        (dict(files=[("files", ("huge.png", png_claiming(10_000, 10_000), "image/png"))]), 422, "huge.png", "bomb"),
        (
            dict(files=[("files", ("ok.png", good, "image/png")), ("files", ("x.gif", b"GIF89a", "image/gif"))]),
            422,
            "x.gif",
            "x.gif: ",
        ),
        (dict(files=[("files", ("noise.png", png(300, 300), "image/png"))]), 413, None, "over the limit of 50.0 kB"),
        (dict(content=chunked_body(), headers={"content-type": multipart}), 413, "big.png", "while reading big.png"),
        (dict(files=parts(*images[:4])), 413, images[3].name, "more than 3 files"),
        (dict(content=b"hello", headers={"content-type": "text/plain"}), 415, None, "not accepted"),
        (
            dict(
                content=b'{"images": [{"name": "a.png", "data": "%%"}]}', headers={"content-type": "application/json"}
            ),
            400,
            "a.png",
            "not valid base64",
        ),
        (dict(content=b"--B\r\nbroken", headers={"content-type": multipart}), 400, None, "closing boundary"),
    ]
    with client(served, max_upload_mb=0.05, max_files=3) as c:
        for i, (request, status, file, words) in enumerate(bad):
            response = c.post("/predict", **request)
            assert response.status_code == status, (i, response.text)
            assert response.json()["file"] == file and words in response.json()["error"], (i, response.json())
        assert c.post("/predict?top_k=0", files=parts(images[0])).status_code == 422
        assert c.post("/explain", files=[("files", ("e.txt", b"no", "text/plain"))]).json()["file"] == "e.txt"
        after = c.post("/predict", files=parts(*images[:3]))
        assert after.status_code == 200
        assert_same(after.json()["predictions"], expected)
        stats = c.get("/metadata").json()["stats"]
        assert stats["refused"] == len(bad) + 1 and stats["images"] == 3  # nothing bad reached the model


def test_uploads_never_touch_the_disk(served, monkeypatch):
    """A 2 MB upload — Starlette's own form parsing would spool it to a temporary file."""
    big = png(900, 800, seed=5)
    assert len(big) > 2_000_000

    def no_disk(*args, **kwargs):
        raise AssertionError("an upload was about to be written to disk")

    for name in ("SpooledTemporaryFile", "TemporaryFile", "NamedTemporaryFile", "mkstemp"):
        monkeypatch.setattr(tempfile, name, no_disk)
    with client(served) as c:
        response = c.post("/predict", files=[("files", ("big.png", big, "image/png"))])
    assert response.status_code == 200, response.text
    assert response.json()["predictions"][0]["path"] == "big.png"


def test_concurrent_requests_share_model_calls(served, images, expected):
    answers: list[dict] = []
    start = threading.Barrier(12)
    with client(served, max_wait_ms=150) as c:

        def one(path: Path) -> None:
            start.wait()
            response = c.post("/predict", files=parts(path))
            answers.extend(response.json()["predictions"])

        threads = [threading.Thread(target=one, args=(images[i % len(images)],)) for i in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        stats = c.get("/metadata").json()["stats"]
    assert len(answers) == 12
    assert_same(answers, expected)  # batched with strangers, still the same numbers
    assert stats["requests"] == stats["chunks"] == stats["images"] == 12
    assert stats["model_calls"] < 12 and stats["largest_batch"] > 1, stats


def test_metadata_healthz_and_docs_that_need_no_network(served, run_dir):
    with client(served) as c:
        assert c.get("/healthz").json() == {"status": "ok", "queued": 0}
        meta = c.get("/metadata").json()
        docs = c.get("/docs").text
        assets = [c.get(f"/docs-assets/{name}") for name in ("swagger-ui-bundle.js", "swagger-ui.css")]
        body = c.get("/openapi.json").json()["paths"]["/predict"]["post"]["requestBody"]["content"]
        page = c.get("/").text
    assert meta["classes"] == ["cat", "dog", "fox"] and meta["classes_known"]
    assert (meta["kind"], meta["format"], meta["base"], meta["image_size"]) == ("run", "keras", "mobilenet_v2", 32)
    assert meta["source"] == str(run_dir) and meta["explain"] and meta["multi_label"] is False
    assert meta["limits"]["max_batch_size"] == 32 and meta["top_k"] == 3
    assert "/docs-assets/swagger-ui-bundle.js" in docs and "https://" not in docs
    assert all(a.status_code == 200 and len(a.content) > 100_000 for a in assets)
    assert set(body) == {"multipart/form-data", "application/json"}
    assert "<script src" not in page and "http://" not in page and "https://" not in page  # all inline


def test_explain_gives_the_overlay_of_the_predicted_class(served, images, expected):
    with client(served) as c:
        response = c.post("/explain", files=parts(images[1]))
    assert response.status_code == 200, response.text
    (item,) = response.json()["explanations"]
    assert item["label"] == expected[images[1].name]["label"]
    assert abs(item["prob"] - expected[images[1].name]["prob"]) < 1e-4
    assert item["overlay"].startswith("data:image/png;base64,")
    overlay = Image.open(io.BytesIO(base64.b64decode(item["overlay"].split(",", 1)[1])))
    assert overlay.size == Image.open(images[1]).size  # drawn over the upload itself (40 px here)


def test_an_exported_model_is_served_with_predicts_numbers(run_dir, images, tmp_path):
    from tlkit.exporting.exporter import export

    folder = export(run_dir, "tflite", output=tmp_path / "tflite", parity_images=3).path
    reference = {Path(p.path).name: p.as_dict() for p in predict(folder, images)}
    served = ServedModel.load(folder)
    with client(served, max_batch_size=4) as c:  # 6 images: batches of 4 and 2 resize the interpreter
        answers = c.post("/predict", files=parts(*images)).json()["predictions"]
        meta = c.get("/metadata").json()
        explain = c.post("/explain", files=parts(images[0]))
    assert_same(answers, reference)
    assert (meta["kind"], meta["format"], meta["base"], meta["explain"]) == ("export", "tflite", "mobilenet_v2", False)
    assert meta["run_dir"] == str(run_dir.resolve())
    assert explain.status_code == 409 and "serve the run directory" in explain.json()["error"]


# --------------------------------------------------------------------------- a stand-in model (no TensorFlow)


class StandIn:
    """Three independent label probabilities from an image's mean brightness; an all-black image breaks it."""

    input_shape = (None, 8, 8, 3)
    output_shape = (None, 3)

    def predict_on_batch(self, x):
        means = x.mean(axis=(1, 2, 3)) / 255.0
        if (means == 0).any():
            raise RuntimeError("the stand-in model broke")
        return np.stack([means, np.full_like(means, 0.5), 1 - means], axis=1)


def stand_in(**config) -> ServedModel:
    from tlkit.inference.prediction import ModelSource

    source = ModelSource(Path("standin.keras"), None, ["sun", "sky", "night"], True, config=config, model=StandIn())
    return ServedModel(Path("standin.keras"), source, "model", "keras", thresholds=np.array([0.6, 0.5, 0.6]))


def solid(value: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (value, value, value)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_multi_label_model_answers_every_label_at_or_over_its_threshold():
    with client(stand_in(multi_label=True)) as c:
        response = c.post("/predict", files=[("files", ("bright.png", solid(230), "image/png"))])
        meta = c.get("/metadata").json()
    (answer,) = response.json()["predictions"]
    assert answer.keys() == {"path", "labels", "error"}  # as `tlkit predict --json` prints a multi-label model
    assert [(x["label"], round(x["prob"], 3)) for x in answer["labels"]] == [("sun", 0.902), ("sky", 0.5)]
    assert meta["multi_label"] and meta["thresholds"] == {"sun": 0.6, "sky": 0.5, "night": 0.6}
    assert meta["explain"] is False


def test_a_model_failure_is_a_500_for_its_request_only():
    with client(stand_in(), max_wait_ms=0) as c:
        broken = c.post("/predict", files=[("files", ("black.png", solid(0), "image/png"))])
        fine = c.post("/predict", files=[("files", ("grey.png", solid(128), "image/png"))])
    assert broken.status_code == 500 and broken.json() == {
        "error": "the model failed: the stand-in model broke",
        "file": None,
    }
    assert fine.status_code == 200 and fine.json()["predictions"][0]["labels"][0]["label"] == "sky"
