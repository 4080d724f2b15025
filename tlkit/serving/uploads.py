"""Reading images out of a request, in memory, with limits — never onto disk.

Two bodies are accepted (``POST /predict`` and ``POST /explain``):

- ``multipart/form-data``: one part per image file (any field name, e.g. ``files``; a part without a
  file name is a plain form field and ignored) — ``curl -F files=@cat.jpg -F files=@dog.png``;
- ``application/json``: ``{"images": [{"name": "cat.jpg", "data": "<base64>"}, ...]}`` (``data`` may
  be a ``data:image/...;base64,`` URL; ``name`` is optional).

Starlette's own form parsing spools a part over 1 MB to a temporary file; here
the body is read from ``request.stream()`` and multipart is parsed by
python-multipart's streaming parser into ``bytes``, so an upload never touches
the disk.  The body is capped at ``max_bytes``: a ``Content-Length`` over it is
refused before anything is read (so ``curl``, which asks ``Expect: 100-continue``,
never sends it), and a body that passes it while streaming is refused at once,
naming the file being read.  Each image is then decoded by
:func:`tlkit.data.decode.decode_image_bytes`, the same decoding as ``tlkit
predict``, so the numbers match.  Every refusal is an :class:`UploadError`: an
HTTP status and a one-line message naming the file when there is one.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from tlkit.data.decode import BadImageError, decode_image_bytes
from tlkit.errors import first_line

__all__ = ["Upload", "UploadError", "decode_upload", "read_uploads"]


class UploadError(Exception):
    """A request the server refuses: ``status`` (400, 413, 415, 422, 503…), one line, and the file it is about."""

    def __init__(self, status: int, message: str, file: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.file = file

    def as_dict(self) -> dict[str, Any]:
        return {"error": self.message, "file": self.file}


@dataclass
class Upload:
    """One uploaded image: the name the client gave it and its bytes."""

    name: str
    data: bytes


async def read_uploads(
    content_type: str, content_length: str | None, stream: AsyncIterator[bytes], *, max_bytes: int, max_files: int
) -> list[Upload]:
    """The images of a request body (see the module doc), at least one and at most ``max_files``.

    Raises:
        UploadError: 413 for a body over ``max_bytes`` or too many files, 415 for another
            content type, 400 for a malformed body or one without images.
    """
    if content_length is not None and content_length.strip().isdigit() and int(content_length) > max_bytes:
        raise UploadError(
            413, f"the request body is {_mb(int(content_length))}, over the limit of {_mb(max_bytes)} (--max-upload-mb)"
        )
    mime, params = parse_options_header(content_type or "")
    if mime == b"multipart/form-data":
        boundary = params.get(b"boundary")
        if not boundary:
            raise UploadError(400, "multipart/form-data without a boundary")
        uploads = await _multipart(boundary, stream, max_bytes, max_files)
    elif mime == b"application/json" or mime.endswith(b"+json"):
        uploads = _json(await _read_all(stream, max_bytes), max_files)
    else:
        shown = mime.decode("latin-1") or "none"
        raise UploadError(
            415,
            f"content type {shown} is not accepted: send images as multipart/form-data file parts, or as "
            'application/json {"images": [{"name": ..., "data": "<base64>"}]}',
        )
    if not uploads:
        raise UploadError(400, "the request holds no image: add file parts, or entries to the JSON 'images' list")
    return uploads


def decode_upload(upload: Upload, size: int, max_pixels: int) -> np.ndarray:
    """``upload``'s pixels, ``(size, size, 3)`` uint8, decoded as ``tlkit predict`` decodes a file.

    Raises:
        UploadError: 422 naming the file: not an image, truncated, corrupt, or over ``max_pixels``.
    """
    try:
        return decode_image_bytes(upload.data, size, name=upload.name, max_pixels=max_pixels)
    except BadImageError as exc:
        raise UploadError(422, f"{upload.name}: {exc.reason}", upload.name) from None


def _mb(size: int) -> str:
    return f"{size / 1_000_000:.1f} MB" if size >= 100_000 else f"{size / 1000:.1f} kB"


async def _read_all(stream: AsyncIterator[bytes], max_bytes: int) -> bytes:
    body = bytearray()
    async for chunk in stream:
        body += chunk
        if len(body) > max_bytes:
            raise UploadError(413, f"the request body passed the limit of {_mb(max_bytes)} (--max-upload-mb)")
    return bytes(body)


def _json(body: bytes, max_files: int) -> list[Upload]:
    try:
        document = json.loads(body)
    except ValueError as exc:
        raise UploadError(400, f"the body is not valid JSON: {exc}") from None
    items = document.get("images") if isinstance(document, dict) else None
    if not isinstance(items, list):
        raise UploadError(400, 'expected a JSON object {"images": [{"name": ..., "data": "<base64>"}, ...]}')
    uploads = []
    for index, item in enumerate(items):
        name, data = f"image-{index + 1}", item
        if isinstance(item, dict):
            name = _clean_name(str(item.get("name") or name))
            data = item.get("data")
        if index >= max_files:
            raise UploadError(413, f"more than {max_files} images in one request (--max-files)", name)
        if not isinstance(data, str):
            raise UploadError(400, f"{name}: 'data' must be a base64 string", name)
        if data.startswith("data:") and "," in data:  # a data: URL
            data = data.split(",", 1)[1]
        try:
            uploads.append(Upload(name, base64.b64decode(data, validate=True)))
        except (binascii.Error, ValueError):
            raise UploadError(400, f"{name}: 'data' is not valid base64", name) from None
    return uploads


def _clean_name(name: str) -> str:
    """The file's own name: no folders (some clients send a path), no control characters, at most 200 chars."""
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    return "".join(c for c in name if c.isprintable())[:200] or "image"


class _Parts:
    """python-multipart callbacks that keep each file part's bytes in memory."""

    def __init__(self, max_files: int) -> None:
        self.max_files = max_files
        self.uploads: list[Upload] = []
        self.current: str | None = None  # the file part being read (None: a plain field)
        self.ended = False
        self._headers: dict[bytes, bytes] = {}
        self._field = bytearray()
        self._value = bytearray()
        self._data = bytearray()

    def callbacks(self) -> Any:  # python-multipart's MultipartCallbacks (a TypedDict)
        return {
            "on_part_begin": self.part_begin,
            "on_header_field": lambda data, start, end: self._field.extend(data[start:end]),
            "on_header_value": lambda data, start, end: self._value.extend(data[start:end]),
            "on_header_end": self.header_end,
            "on_headers_finished": self.headers_finished,
            "on_part_data": self.part_data,
            "on_part_end": self.part_end,
            "on_end": self.end,
        }

    def part_begin(self) -> None:
        self._headers.clear()
        self._data = bytearray()
        self.current = None

    def header_end(self) -> None:
        self._headers[bytes(self._field).strip().lower()] = bytes(self._value).strip()
        self._field.clear()
        self._value.clear()

    def headers_finished(self) -> None:
        _, params = parse_options_header(self._headers.get(b"content-disposition", b""))
        filename = params.get(b"filename")
        if filename is None:
            return  # a plain form field
        name = _clean_name(filename.decode("utf-8", errors="replace")) if filename else ""
        if len(self.uploads) >= self.max_files:
            raise UploadError(413, f"more than {self.max_files} files in one request (--max-files)", name or None)
        self.current = name

    def part_data(self, data: bytes, start: int, end: int) -> None:
        if self.current is not None:
            self._data.extend(data[start:end])

    def part_end(self) -> None:
        # A form's empty file input sends a part with an empty file name and no bytes: nothing chosen.
        if self.current is not None and (self.current or self._data):
            self.uploads.append(Upload(self.current or f"image-{len(self.uploads) + 1}", bytes(self._data)))
        self.current = None
        self._data = bytearray()

    def end(self) -> None:
        self.ended = True


async def _multipart(boundary: bytes, stream: AsyncIterator[bytes], max_bytes: int, max_files: int) -> list[Upload]:
    parts = _Parts(max_files)
    try:
        parser = MultipartParser(boundary, parts.callbacks())
    except ValueError as exc:
        raise UploadError(400, f"bad multipart boundary: {exc}") from None
    size = 0
    try:
        async for chunk in stream:
            if size + len(chunk) > max_bytes:
                parser.write(chunk[: max_bytes - size])  # up to the cap: the part being read then is named
                raise UploadError(
                    413,
                    f"the request body passed the limit of {_mb(max_bytes)} (--max-upload-mb)"
                    + (f" while reading {parts.current}" if parts.current else ""),
                    parts.current,
                )
            size += len(chunk)
            parser.write(chunk)
        parser.finalize()
    except MultipartParseError as exc:
        raise UploadError(400, f"malformed multipart body: {first_line(exc)}") from None
    if not parts.ended:
        raise UploadError(400, "the multipart body ended before its closing boundary (a truncated upload?)")
    return parts.uploads
