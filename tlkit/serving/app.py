"""The FastAPI app of ``tlkit serve``: routes, refusals as JSON, the micro-batcher's lifetime.

>>> app = create_app(ServedModel.load("runs/20261128-101500-mobilenet_v2-dense256"), ServeOptions())
>>> # uvicorn.run(app) — or tlkit.serving.server.serve(), which also checks, binds and prints

Routes:

- ``GET /`` — the page (``page.html``): pick or drop images, see the top-k classes and, for a
  Keras model, the Grad-CAM overlay; inline CSS and JS, no network resource;
- ``POST /predict`` — images (multipart or JSON, see :mod:`tlkit.serving.uploads`) → one
  ``tlkit predict --json`` object per image, in order (``?top_k=`` overrides ``--top-k``);
- ``POST /explain`` — images → the Grad-CAM overlay of each (409 for an exported model);
- ``GET /healthz``, ``GET /metadata`` (classes, base, input size, source, limits, batcher stats);
- ``GET /docs`` (Swagger UI) and ``/redoc``, their assets served from the ``fastapi-offline``
  package rather than a CDN, and ``/openapi.json``.

Every refusal is JSON ``{"error": "...", "file": "<name or null>"}`` with a 4xx status (503
when the queue is full, 500 if the model itself fails); nothing a client sends can stop the
server.  Decoding runs in a small thread pool and Grad-CAM in a thread of its own, so the
event loop only parses and routes.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from tlkit.errors import first_line
from tlkit.serving import schemas
from tlkit.serving.batcher import Busy, MicroBatcher
from tlkit.serving.model import ServedModel
from tlkit.serving.options import ServeOptions
from tlkit.serving.uploads import Upload, UploadError, decode_upload, read_uploads
from tlkit.version import __version__

__all__ = ["create_app"]

_REFUSALS: dict[int | str, dict[str, Any]] = {
    status: {"model": schemas.Error, "description": text}
    for status, text in {
        400: "A malformed body (bad multipart or JSON, bad base64) or no image in it.",
        413: "The body is over --max-upload-mb, or it holds more than --max-files images.",
        415: "Neither multipart/form-data nor application/json.",
        422: "An image that cannot be decoded (not an image, truncated, corrupt) or is over --max-pixels.",
        503: "Too many images are waiting for the model (--max-queue): retry shortly.",
    }.items()
}


def create_app(served: ServedModel, options: ServeOptions | None = None) -> FastAPI:
    """The app serving ``served`` with ``options``; the micro-batcher starts and stops with the app's lifespan."""
    options = options or ServeOptions()
    batcher = MicroBatcher(
        served.predict,
        max_batch_size=options.max_batch_size,
        max_wait_ms=options.max_wait_ms,
        max_queue=options.max_queue,
    )
    pools: dict[str, ThreadPoolExecutor] = {}
    counts = {"requests": 0, "refused": 0}
    page = resources.files("tlkit.serving").joinpath("page.html").read_text(encoding="utf-8")

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        pools["decode"] = ThreadPoolExecutor(min(4, os.cpu_count() or 1), thread_name_prefix="tlkit-decode")
        pools["explain"] = ThreadPoolExecutor(1, thread_name_prefix="tlkit-explain")
        await batcher.start()
        try:
            yield
        finally:
            await batcher.stop()
            for pool in pools.values():
                pool.shutdown(wait=True, cancel_futures=True)

    app = FastAPIOffline(
        title="tlkit serve",
        version=__version__,
        description=f"Predictions of {served.location} ({served.kind}, {served.format}): "
        f"{len(served.classes)} classes at {served.image_size} px. The page at / uses the same API.",
        lifespan=lifespan,
        static_url="/docs-assets",
        swagger_ui_parameters={"validatorUrl": None, "tryItOutEnabled": True},
    )
    app.state.served, app.state.options, app.state.batcher = served, options, batcher

    # ------------------------------------------------------------------ refusals, always JSON

    @app.exception_handler(UploadError)
    async def _refused(_: Request, exc: UploadError) -> JSONResponse:
        counts["refused"] += 1
        headers = {"Retry-After": "1"} if exc.status == 503 else None
        return JSONResponse(exc.as_dict(), status_code=exc.status, headers=headers)

    @app.exception_handler(HTTPException)
    async def _http(_: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail), "file": None}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(map(str, e.get('loc', ())))}: {e.get('msg')}" for e in exc.errors())
        return JSONResponse({"error": problems or "invalid request", "file": None}, status_code=422)

    @app.exception_handler(Exception)
    async def _bug(_: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"error": f"internal error: {type(exc).__name__}: {first_line(exc)}", "file": None}, 500)

    # ------------------------------------------------------------------ reading and running

    async def uploads_of(request: Request) -> list[Upload]:
        counts["requests"] += 1
        try:
            return await read_uploads(
                request.headers.get("content-type", ""),
                request.headers.get("content-length"),
                request.stream(),
                max_bytes=options.max_upload_bytes,
                max_files=options.max_files,
            )
        except ClientDisconnect:  # the client hung up mid-upload: nobody to answer, nothing to log
            raise UploadError(400, "the client disconnected before the body was complete") from None

    async def decoded(uploads: list[Upload]) -> np.ndarray:
        loop = asyncio.get_running_loop()
        jobs = [
            loop.run_in_executor(pools["decode"], decode_upload, u, served.image_size, options.max_pixels)
            for u in uploads
        ]
        results = await asyncio.gather(*jobs, return_exceptions=True)
        pixels = []
        for result in results:  # the first bad file, in the request's order
            if isinstance(result, BaseException):
                raise result
            pixels.append(result)
        return np.stack(pixels)

    # ------------------------------------------------------------------ routes

    @app.get("/", include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/healthz", summary="Is the server up")
    async def healthz() -> dict[str, Any]:
        """``{"status": "ok"}`` once the model is loaded (the server binds its port only then)."""
        return {"status": "ok", "queued": batcher.queued}

    @app.get("/metadata", summary="The model served, the limits, the batcher's counts", response_model=None)
    async def metadata() -> JSONResponse:
        """Classes, base, input size, where the model came from; the server's limits; and counts of
        requests and model calls (``stats.model_calls`` below ``stats.chunks`` means requests shared calls)."""
        limits = {
            name: getattr(options, name)
            for name in ("max_batch_size", "max_wait_ms", "max_queue", "max_upload_mb", "max_files", "max_pixels")
        }
        stats = {**counts, **batcher.stats.as_dict(), "queued": batcher.queued}
        return JSONResponse({**served.metadata(), "top_k": options.top_k, "limits": limits, "stats": stats})

    @app.post(
        "/predict",
        summary="Top-k classes of images",
        openapi_extra=schemas.IMAGES_BODY,
        responses={200: {"model": schemas.Predictions}, **_REFUSALS},
        response_model=None,
    )
    async def predict(
        request: Request,
        top_k: int | None = Query(None, ge=1, le=10_000, description="Classes per image (default --top-k)."),
    ) -> JSONResponse:
        """The top-k classes and probabilities of each image, in the request's order: per image the
        object ``tlkit predict --json`` prints for a file (``path`` is the uploaded file's name), with
        the same numbers.  Images from concurrent requests share model calls (micro-batching)."""
        with batcher.incoming() as ticket:  # the batcher may wait for this request's images
            uploads = await uploads_of(request)
            pixels = await decoded(uploads)
            try:
                probs = await batcher.predict(pixels, ticket)
            except Busy as exc:
                raise UploadError(503, str(exc)) from None
            except Exception as exc:  # noqa: BLE001 - a model failure is this request's 500, not the server's end
                raise UploadError(500, f"the model failed: {first_line(exc)}") from None
        k = top_k or options.top_k
        answers = [served.answer(u.name, row, k).as_dict() for u, row in zip(uploads, probs)]
        return JSONResponse({"predictions": answers})

    @app.post(
        "/explain",
        summary="Grad-CAM overlays of images",
        openapi_extra=schemas.IMAGES_BODY,
        responses={
            200: {"model": schemas.Explanations},
            409: {"model": schemas.Error, "description": "No Grad-CAM for this model (an export)."},
            **_REFUSALS,
        },
        response_model=None,
    )
    async def explain(request: Request) -> JSONResponse:
        """Where in each image the model found its predicted class (Grad-CAM, as ``tlkit explain``):
        the overlay is a PNG ``data:`` URL of the heatmap over the image.  Only for a Keras model (a
        run or a ``.keras`` file); an exported model answers 409."""
        if served.explainer is None:
            raise UploadError(409, served.explain_note or "Grad-CAM is not available for this model")
        uploads = await uploads_of(request)
        pixels = await decoded(uploads)
        loop = asyncio.get_running_loop()
        try:
            found = [
                await loop.run_in_executor(pools["explain"], served.explain, u.name, pixels[i], u.data)
                for i, u in enumerate(uploads)
            ]
        except Exception as exc:  # noqa: BLE001 - as /predict
            raise UploadError(500, f"Grad-CAM failed: {first_line(exc)}") from None
        return JSONResponse({"explanations": found})

    return app
