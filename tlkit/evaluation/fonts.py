"""Class names in any script on tlkit's figures, without matplotlib's "Glyph ... missing" warnings.

matplotlib draws with DejaVu Sans, which has Latin, Greek and Cyrillic but no CJK, Arabic script
or emoji; a class named 猫 would come out as a box and a warning per figure.  :func:`text_fonts`
looks for an installed font that has the missing characters and lists it as matplotlib's
fallback font; where none has them, :func:`shown` writes each missing character as its code
point (``<U+732B>``), so every class still gets a distinct, readable label.
"""

from __future__ import annotations

import functools
import logging
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

GLYPH_WARNING = r"Glyph .* missing from (current )?font"


@functools.cache
def _charmap(path: str) -> frozenset[int]:
    from matplotlib.ft2font import FT2Font  # lazy: matplotlib only when a figure is drawn

    try:
        return frozenset(FT2Font(path).get_charmap())
    except (OSError, RuntimeError, ValueError):  # a font file matplotlib cannot read
        return frozenset()


@functools.lru_cache(maxsize=64)
def _plan(chars: frozenset[int], family: str) -> tuple[tuple[str, ...], frozenset[int]]:
    """(fallback font families, characters still missing) for drawing ``chars`` in ``family``."""
    from matplotlib import font_manager  # lazy: matplotlib only when a figure is drawn

    default = font_manager.findfont(font_manager.FontProperties(family=[family]), fallback_to_default=True)
    missing = chars - _charmap(default)
    if not missing:
        return (), frozenset()
    default_name = font_manager.FontProperties(fname=default).get_name()
    fallbacks: list[str] = []
    for entry in sorted(font_manager.fontManager.ttflist, key=lambda e: (e.name, e.fname)):
        # A font named like the default resolves to the default again; matplotlib's own "Last
        # Resort" font maps every code point to a box, no help to a reader.
        if entry.name == default_name or entry.name.startswith("Last Resort") or entry.name in fallbacks:
            continue
        covered = missing & _charmap(entry.fname)
        if covered:
            fallbacks.append(entry.name)
            missing -= covered
        if not missing:
            break
    return tuple(fallbacks), missing


def text_fonts(texts: Iterable[str], rc: dict[str, Any]) -> tuple[dict[str, Any], Callable[[str], str]]:
    """The rcParams that draw ``texts`` (a fallback font when one is needed and installed) and
    the function that turns a text into what is drawn (characters no font has, as code points)."""
    chars = frozenset(ord(c) for text in texts for c in text if ord(c) > 0x7E)
    if not chars:
        return {}, str
    family = rc.get("font.family", "sans-serif")
    first = family[0] if isinstance(family, list | tuple) else family
    fallbacks, missing = _plan(chars, first)
    extra = {"font.family": [first, *fallbacks]} if fallbacks else {}

    def shown(text: str) -> str:
        return "".join(f"<U+{ord(c):04X}>" if ord(c) in missing else c for c in text)

    return extra, shown


@contextmanager
def quiet_glyphs() -> Iterator[None]:
    """Silence matplotlib's missing-glyph warnings and font-weight log lines (the labels were made drawable)."""
    # matplotlib also logs "findfont: Failed to find font weight bold for <fallback>" when a
    # fallback font has no bold face: it then uses the regular one, which is fine.
    logger = logging.getLogger("matplotlib.font_manager")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=GLYPH_WARNING, category=UserWarning)
            yield
    finally:
        logger.setLevel(level)


__all__ = ["GLYPH_WARNING", "quiet_glyphs", "text_fonts"]
