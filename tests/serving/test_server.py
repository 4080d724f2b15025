"""``tlkit serve`` as a user runs it: a real uvicorn process on a free port whose /predict equals
``tlkit predict --json``, that survives bad input, whose page works in headless Chromium with no
network; and the start-up: options, path and port checked before the model loads, the URL announced."""

from __future__ import annotations

import base64
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.serving.test_app import assert_same, parts
from tests.support import CHROMIUM, NEEDS_CHROMIUM, TLKIT, invoke_tlkit
from tlkit.observer import TrainingObserver


@pytest.fixture(scope="module")
def server(run_dir):
    """``tlkit serve RUN --port 0``: the URL it announces once its model is loaded and its port bound."""
    process = subprocess.Popen(
        [TLKIT, "serve", str(run_dir), "--port", "0", "--max-upload-mb", "0.05"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "COLUMNS": "300"},
    )
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 180
        url = None
        assert process.stdout is not None
        while url is None and time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line)
            found = re.search(r"^Serving .* at (http://127\.0\.0\.1:\d+)$", line.strip())
            url = found.group(1) if found else None
        assert url, "".join(lines)
        yield url
    finally:
        process.send_signal(signal.SIGINT)  # Ctrl+C: a graceful stop
        try:
            assert process.wait(30) == 0
        except subprocess.TimeoutExpired:
            process.kill()
            raise
        assert process.stdout is not None and process.stdout.read().strip().endswith("Stopped.")


def test_the_real_server_answers_like_tlkit_predict(server, images, expected):
    assert httpx.get(f"{server}/healthz").json()["status"] == "ok"
    response = httpx.post(f"{server}/predict", files=parts(*images[:3]), timeout=60)
    assert response.status_code == 200, response.text
    assert_same(response.json()["predictions"], expected)


def test_the_real_server_survives_bad_input(server, images, expected):
    def body():  # chunked, no Content-Length: refused inside the file, naming it
        yield b'--B\r\nContent-Disposition: form-data; name="files"; filename="big.png"\r\n\r\n'
        yield b"\0" * 60_000
        yield b"\r\n--B--\r\n"

    big = httpx.post(
        f"{server}/predict", content=body(), headers={"content-type": "multipart/form-data; boundary=B"}, timeout=60
    )
    assert (big.status_code, big.json()["file"]) == (413, "big.png")
    junk = httpx.post(f"{server}/predict", files=[("files", ("junk.jpg", b"\xff\xd8\xff" + b"\0" * 50, "image/jpeg"))])
    assert (junk.status_code, junk.json()["file"]) == (422, "junk.jpg")
    after = httpx.post(f"{server}/predict", files=parts(images[3]), timeout=60)
    assert after.status_code == 200
    assert_same(after.json()["predictions"], expected)


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=NEEDS_CHROMIUM)
def test_the_page_in_headless_chromium_with_no_network(server, images, expected):
    from playwright.sync_api import sync_playwright

    requested: list[str] = []

    def only_this_server(route):
        requested.append(route.request.url)
        route.continue_() if route.request.url.startswith(server) else route.abort()

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
        )
        try:
            page = browser.new_page()
            page.route("**/*", only_this_server)
            page.goto(f"{server}/")
            page.wait_for_function("document.getElementById('model').textContent.includes('mobilenet_v2')")
            # Pick a file …
            page.set_input_files("#files", str(images[2]))
            picked = page.locator(f'.card[data-name="{images[2].name}"]')
            picked.locator(".label").wait_for(timeout=30_000)
            assert picked.get_attribute("data-state") == "done"
            assert picked.locator(".label").inner_text() == expected[images[2].name]["label"]
            assert picked.locator(".row").count() == 3
            page.wait_for_selector(f'.card[data-name="{images[2].name}"][data-explained="yes"] img.overlay')
            # … and drop one.
            data = base64.b64encode(images[4].read_bytes()).decode()
            transfer = page.evaluate_handle(
                """([name, data]) => {
                    const bytes = Uint8Array.from(atob(data), c => c.charCodeAt(0));
                    const dt = new DataTransfer();
                    dt.items.add(new File([bytes], name, {type: "image/png"}));
                    return dt;
                }""",
                [images[4].name, data],
            )
            page.dispatch_event("#drop", "drop", {"dataTransfer": transfer})
            dropped = page.locator(f'.card[data-name="{images[4].name}"] .label')
            dropped.wait_for(timeout=30_000)
            assert dropped.inner_text() == expected[images[4].name]["label"]
            # A bad file shows its error in its card.
            page.set_input_files("#files", files=[{"name": "notes.txt", "mimeType": "text/plain", "buffer": b"text"}])
            error = page.locator('.card[data-name="notes.txt"] .error')
            error.wait_for(timeout=30_000)
            assert "not a readable image" in error.inner_text()
            # The API docs render from the server's own assets.
            page.goto(f"{server}/docs")
            page.wait_for_selector("text=/predict", timeout=30_000)
        finally:
            browser.close()
    assert requested and all(url.startswith(server) for url in requested), requested


# --------------------------------------------------------------------------- start-up


def test_options_path_and_port_are_checked_before_the_model_loads(run_dir, monkeypatch):
    from tlkit.serving import model

    def never(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(model.ServedModel, "load", never)
    missing = invoke_tlkit("serve", run_dir / "nope")
    assert missing.returncode != 0 and "nope does not exist" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1
    wrong = invoke_tlkit("serve", run_dir, "--max-wait-ms", "-1")
    assert wrong.returncode != 0 and "--max-wait-ms must be between 0" in wrong.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = invoke_tlkit("serve", run_dir, "--port", str(port))
    assert busy.returncode != 0 and f"cannot listen on 127.0.0.1:{port}" in busy.stderr, busy.stderr


def test_start_up_warns_on_every_interface_and_announces_the_url(run_dir, monkeypatch):
    import uvicorn

    import tlkit

    class Lines(TrainingObserver):
        def __init__(self):
            self.lines: list[tuple[str, str]] = []

        def message(self, text, level="info"):
            self.lines.append((level, text))

    ran = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets: ran.append(sockets[0].getsockname()))
    observer = Lines()
    tlkit.serve(run_dir, host="0.0.0.0", port=0, max_wait_ms=0, observer=observer)
    (address,) = ran
    levels = [level for level, _ in observer.lines]
    assert levels[0] == "warning" and "every network interface" in observer.lines[0][1]
    serving = next(text for _, text in observer.lines if text.startswith("Serving"))
    assert serving.endswith(f"at http://0.0.0.0:{address[1]}") and "3 classes, 32 px, Grad-CAM" in serving
    assert any("micro-batching off" in text for _, text in observer.lines)
