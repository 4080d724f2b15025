"""tlkit serve's request bodies: multipart and JSON read in memory, every limit and malformed body refused
with a status and the file's name, the options checked before anything loads (no model, no TensorFlow)."""

from __future__ import annotations

import asyncio
import base64
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from tlkit.errors import TlkitError
from tlkit.serving.options import ServeOptions
from tlkit.serving.uploads import Upload, UploadError, decode_upload, read_uploads

BOUNDARY = "tlkit-test-boundary"
MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"


def png(width: int = 40, height: int = 30, seed: int = 0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height``: a decompression bomb's first bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


def multipart(*parts: tuple[str | None, bytes], field: str = "files") -> bytes:
    body = b""
    for name, data in parts:
        disposition = f'form-data; name="{field}"' + (f'; filename="{name}"' if name is not None else "")
        body += f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + data + b"\r\n"
    return body + f"--{BOUNDARY}--\r\n".encode()


async def _stream(body: bytes, chunk: int):
    for start in range(0, len(body), chunk):
        yield body[start : start + chunk]


def read(
    body: bytes, content_type: str = MULTIPART, *, max_bytes=10**6, max_files=8, chunk=1000, length=True
) -> list[Upload]:
    declared = str(len(body)) if length else None
    return asyncio.run(
        read_uploads(content_type, declared, _stream(body, chunk), max_bytes=max_bytes, max_files=max_files)
    )


def refused(*args, **kwargs) -> UploadError:
    with pytest.raises(UploadError) as caught:
        read(*args, **kwargs)
    return caught.value


def test_multipart_parts_in_memory_in_order_with_their_names():
    a, b = png(seed=1), png(seed=2)
    # Chunks of 7 bytes split boundaries and headers: the streaming parser must not care.
    uploads = read(multipart(("a.png", a), (None, b"a plain field"), ("C:\\photos\\b.png", b)), chunk=7)
    assert [(u.name, u.data) for u in uploads] == [("a.png", a), ("b.png", b)]


def test_json_images_base64_and_data_urls():
    a, b = png(seed=1), png(seed=2)
    body = {
        "images": [
            {"name": "a.png", "data": base64.b64encode(a).decode()},
            {"data": "data:image/png;base64," + base64.b64encode(b).decode()},
            base64.b64encode(a).decode(),
        ]
    }
    uploads = read(_json(body), "application/json")
    assert [(u.name, u.data) for u in uploads] == [("a.png", a), ("image-2", b), ("image-3", a)]


def _json(value) -> bytes:
    import json

    return json.dumps(value).encode()


def test_a_declared_body_over_the_limit_is_refused_before_reading():
    error = refused(multipart(("big.png", b"x" * 5000)), max_bytes=4000)
    assert (error.status, error.file) == (413, None)
    assert "the request body is 5.1 kB, over the limit of 4.0 kB (--max-upload-mb)" in error.message


def test_a_streamed_body_over_the_limit_names_the_file_being_read():
    body = multipart(("small.png", b"x" * 100), ("big.png", b"y" * 5000))
    error = refused(body, max_bytes=4000, length=False)
    assert (error.status, error.file) == (413, "big.png")
    json_error = refused(_json({"images": ["A" * 8000]}), "application/json", max_bytes=4000, length=False)
    assert json_error.status == 413


def test_too_many_files_names_the_first_one_too_many():
    error = refused(multipart(("1.png", b"1"), ("2.png", b"2"), ("3.png", b"3")), max_files=2)
    assert (error.status, error.file) == (413, "3.png")
    error = refused(
        _json({"images": [{"name": f"{i}.png", "data": ""} for i in range(4)]}), "application/json", max_files=2
    )
    assert (error.status, error.file) == (413, "2.png")


@pytest.mark.parametrize(
    ("body", "content_type", "status", "file", "words"),
    [
        (b"hello", "text/plain", 415, None, "content type text/plain is not accepted"),
        (b"x", "multipart/form-data", 400, None, "without a boundary"),
        (multipart(("a.png", b"abc"))[:-30], MULTIPART, 400, None, "ended before its closing boundary"),
        (multipart((None, b"just a field")), MULTIPART, 400, None, "no image"),
        (b"{not json", "application/json", 400, None, "not valid JSON"),
        (b'{"files": []}', "application/json", 400, None, '{"images"'),
        (b'{"images": [{"name": "a.png", "data": "@@@"}]}', "application/json", 400, "a.png", "not valid base64"),
        (b'{"images": [{"name": "a.png", "data": 3}]}', "application/json", 400, "a.png", "base64 string"),
    ],
)
def test_malformed_bodies(body, content_type, status, file, words):
    error = refused(body, content_type)
    assert (error.status, error.file) == (status, file)
    assert words in error.message
    assert error.as_dict() == {"error": error.message, "file": file}


def test_decoding_matches_the_file_decoder_and_names_bad_files(tmp_path):
    from tlkit.data.decode import load_image

    data = png(57, 31, seed=3)
    (tmp_path / "a.png").write_bytes(data)
    assert np.array_equal(decode_upload(Upload("a.png", data), 32, 10**8), load_image(tmp_path / "a.png", 32))
    cases = {
        "notes.txt": (b"not an image at all", "not a readable image"),
        "cut.png": (data[: len(data) // 2], "truncated"),
        "bomb.png": (png_claiming(100_000, 100_000), "decompression bomb"),  # PIL's own error (over 2x its limit)
        "wide.png": (png(200, 100), "20,000 pixels, over the limit of 10,000"),  # --max-pixels
    }
    for name, (body, words) in cases.items():
        with pytest.raises(UploadError) as caught:
            decode_upload(Upload(name, body), 32, 10_000)
        assert (caught.value.status, caught.value.file) == (422, name)
        assert caught.value.message.startswith(f"{name}: ") and words in caught.value.message, caught.value.message


@pytest.mark.parametrize(
    ("overrides", "flag"),
    [
        ({"port": 70000}, "--port"),
        ({"top_k": 0}, "--top-k"),
        ({"max_batch_size": 0}, "--max-batch-size"),
        ({"max_wait_ms": -1}, "--max-wait-ms"),
        ({"max_upload_mb": 0}, "--max-upload-mb"),
        ({"max_files": 0}, "--max-files"),
        ({"max_queue": 4, "max_batch_size": 8}, "--max-queue"),
        ({"max_pixels": 0}, "--max-pixels"),
        ({"workers": 2}, "unknown serve option(s) workers"),
    ],
)
def test_options_are_checked_naming_the_flag(overrides, flag):
    with pytest.raises(TlkitError, match=flag.replace("(", r"\(").replace(")", r"\)")):
        ServeOptions.make(**overrides)


def test_options_know_every_interface():
    assert ServeOptions.make(host="0.0.0.0").all_interfaces and ServeOptions.make(host="::").all_interfaces
    assert not ServeOptions.make().all_interfaces and ServeOptions.make().max_upload_bytes == 20_000_000
