"""What ``/docs`` shows: the request body of ``/predict`` and ``/explain`` (read by hand, so declared
here for OpenAPI) and the answers' shapes as pydantic models (documentation only: the routes build
plain dicts, the same ones ``tlkit predict --json`` prints)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

__all__ = ["IMAGES_BODY", "Error", "Explanations", "Metadata", "Predictions"]

IMAGES_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "Images as multipart file parts, or as base64 in JSON. The whole body is capped "
        "(--max-upload-mb), as is the number of images (--max-files).",
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "files": {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                            "description": "One part per image (any field name; the part's file name names it).",
                        }
                    },
                    "required": ["files"],
                }
            },
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "images": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": {
                                    "name": {"type": "string", "description": "What the answer calls it."},
                                    "data": {
                                        "type": "string",
                                        "format": "byte",
                                        "description": "The file's bytes in base64 (a data: URL works too).",
                                    },
                                },
                                "required": ["data"],
                            },
                        }
                    },
                    "required": ["images"],
                },
                "example": {"images": [{"name": "cat.png", "data": "iVBORw0KGgo..."}]},
            },
        },
    }
}


class Error(BaseModel):
    """A refused request: what is wrong, and the file it is about (null when it is about the whole request)."""

    error: str
    file: str | None = None


class Ranked(BaseModel):
    label: str
    prob: float


class Prediction(BaseModel):
    """One image, as a line of ``tlkit predict --json``: ``path`` is the uploaded file's name. A multi-label
    model answers ``labels`` (every label at or above its threshold) instead of ``label``/``prob``/``top``."""

    path: str
    label: str | None = None
    prob: float | None = None
    top: list[Ranked] | None = None
    labels: list[Ranked] | None = None
    error: str | None = None


class Predictions(BaseModel):
    predictions: list[Prediction]


class Explanation(BaseModel):
    path: str
    label: str = Field(description="The class explained: the predicted one.")
    prob: float
    layer: str = Field(description="The feature map explained, <base>/<layer>.")
    flat: bool = Field(description="True when the heatmap is all zero (no evidence found).")
    overlay: str = Field(description="The heatmap over the image, a PNG data: URL.")


class Explanations(BaseModel):
    explanations: list[Explanation]


class Metadata(BaseModel, extra="allow"):
    """The model served, the server's limits and what the micro-batcher has done."""

    source: str
    kind: str
    format: str
    classes: list[str]
    image_size: int
    base: str | None = None
    explain: bool
    limits: dict[str, Any]
    stats: dict[str, Any]
