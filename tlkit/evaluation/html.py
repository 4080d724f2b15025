"""The building blocks of tlkit's self-contained HTML pages (the run report, the audit report):
one stylesheet, escaping, and images inlined as data URIs, so a page needs no network."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

from PIL import Image

from tlkit.evaluation.evaluate import thumbnail

THUMB = 96  # thumbnails' longest side, in pixels

PAGE_CSS = """
:root { --fg:#1d2330; --muted:#5b6475; --line:#e3e6ec; --bg:#f6f7f9; --card:#fff;
        --train:#1f77b4; --val:#d62728; --good:#2ca02c; --bad:#b2182b; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--fg);
       font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Liberation Sans", "DejaVu Sans", sans-serif; }
header { background:#1d2330; color:#fff; padding:22px 32px 16px; }
header h1 { margin:0 0 4px; font-size:22px; font-weight:650; }
header .sub { color:#c3c9d6; font-size:13px; }
nav { margin-top:12px; display:flex; gap:18px; flex-wrap:wrap; }
nav a { color:#9ecbff; text-decoration:none; font-size:13px; }
main { max-width:1160px; margin:0 auto; padding:18px 32px 40px; }
section { background:var(--card); border:1px solid var(--line); border-radius:8px; padding:16px 22px 18px;
          margin:16px 0; }
h2 { font-size:17px; margin:0 0 10px; }
h3 { font-size:14px; margin:14px 0 6px; color:var(--muted); }
.cards { display:grid; grid-template-columns:repeat(auto-fit, minmax(170px, 1fr)); gap:12px; margin-top:6px; }
.card { background:var(--card); border:1px solid var(--line); border-radius:8px; padding:10px 14px; }
.card .v { font-size:22px; font-weight:650; }
.card .k { color:var(--muted); font-size:12px; }
table { border-collapse:collapse; font-size:13px; }
th, td { padding:4px 10px; border-bottom:1px solid var(--line); text-align:left; vertical-align:top; }
th { color:var(--muted); font-weight:600; }
td.num, th.num { text-align:right; font-variant-numeric:tabular-nums; }
tr.avg td { font-weight:600; background:#fafbfc; }
.kv { display:grid; grid-template-columns:repeat(auto-fit, minmax(320px, 1fr)); column-gap:24px; }
.kv table { width:100%; }
.kv td:first-child { color:var(--muted); white-space:nowrap; width:40%; }
code, .mono { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size:12.5px; }
.note { color:var(--muted); font-size:13px; }
.warn { color:var(--bad); }
.bar { display:inline-block; height:9px; background:var(--train); border-radius:2px; vertical-align:middle; }
.bar.f1 { background:var(--good); }
.figs { display:grid; grid-template-columns:repeat(auto-fit, minmax(440px, 1fr)); gap:14px; }
img.fig { width:100%; height:auto; border:1px solid var(--line); border-radius:6px; }
img.wide { max-width:100%; height:auto; border:1px solid var(--line); border-radius:6px; }
table.dataset td { vertical-align:middle; }
table.dataset td.cls { font-weight:600; overflow-wrap:anywhere; }
td.samples { padding:3px 10px; white-space:nowrap; }
td.samples img { width:48px; height:48px; object-fit:contain; background:#eef0f3; border-radius:4px;
                 margin-right:4px; vertical-align:middle; }
details summary { cursor:pointer; color:var(--muted); margin:8px 0; }
.gradcam { display:flex; flex-wrap:wrap; gap:12px; }
.gradcam figure { margin:0; width:150px; }
.gradcam img { width:150px; height:150px; object-fit:contain; background:#eef0f3; border-radius:4px; }
.gradcam figcaption { font-size:12px; color:var(--bad); line-height:1.35; overflow-wrap:anywhere; }
footer { color:var(--muted); font-size:12px; text-align:center; padding:10px; }
"""


def escape(value: Any) -> str:
    """``value`` as text safe inside HTML (quotes included)."""
    return html.escape(str(value), quote=True)


def data_uri(data: bytes, mime: str = "image/png") -> str:
    """``data`` inlined as a ``data:`` URI."""
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def jpeg_thumbnail(path: Path, size: int = THUMB) -> bytes | None:
    """A JPEG thumbnail of the image at ``path`` (None when it cannot be read: it is simply not shown)."""
    try:
        pixels = thumbnail(path, size)
    except Exception:  # noqa: BLE001 - an unreadable image is shown as a placeholder by the caller
        return None
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


__all__ = ["PAGE_CSS", "THUMB", "data_uri", "escape", "jpeg_thumbnail"]
