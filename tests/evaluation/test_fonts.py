"""Class names in any script are drawn without warnings: a fallback font, else their code points."""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pytest

from tlkit.evaluation.figures import confusion_figure, figure_png, mistakes_figure
from tlkit.evaluation.fonts import text_fonts


def test_latin_names_need_nothing():
    assert text_fonts(["cat", "dog"], {}) == ({}, str)


def test_characters_no_installed_font_has_become_code_points():
    _, shown = text_fonts(["猫", "chat"], {})  # no CJK font on this machine, nor in CI
    assert shown("猫") in ("猫", "<U+732B>")  # kept when a CJK font is installed, readable either way
    assert shown("chat") == "chat"


def test_a_font_that_has_the_glyphs_becomes_the_fallback():
    from matplotlib import font_manager

    if not any(entry.name == "DejaVu Math TeX Gyre" for entry in font_manager.fontManager.ttflist):
        pytest.skip("needs Debian's fonts-dejavu (DejaVu Math TeX Gyre has U+1D400, DejaVu Sans does not)")
    fonts, shown = text_fonts(["𝐀lpha"], {})
    assert fonts == {"font.family": ["sans-serif", "DejaVu Math TeX Gyre"]} and shown("𝐀lpha") == "𝐀lpha"


def test_figures_with_non_latin_names_warn_and_log_nothing(caplog):
    names = ["猫", "犬", "Ωmega", "𝐀lpha"]
    with warnings.catch_warnings(), caplog.at_level(logging.INFO, logger="matplotlib"):
        warnings.simplefilter("error")
        png = figure_png(confusion_figure(np.eye(4, dtype=int), names))
        item = {"image": np.zeros((8, 8, 3), np.uint8), "true": "猫", "predicted": "犬", "probability": 0.9}
        figure_png(mistakes_figure([item]))
    assert png.startswith(b"\x89PNG") and not [r for r in caplog.records if r.levelno >= logging.WARNING]
