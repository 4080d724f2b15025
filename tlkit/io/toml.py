"""TOML files: read with ``tomllib``, written with ``tomli-w``; a one-line TlkitError for a bad file."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import tomli_w

from tlkit.errors import TlkitError


def read_toml(path: str | Path) -> dict[str, Any]:
    """A TOML file as a dict; a one-line TlkitError when it cannot be read or is not TOML."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except OSError as exc:
        raise TlkitError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise TlkitError(f"{path} is not valid TOML ({exc})") from None


def toml_text(table: Mapping[str, Any], header: str = "") -> str:
    """``table`` as TOML text (scalars first, then sub-tables), after ``header`` comment lines."""
    comments = "".join(f"# {line}\n" for line in header.splitlines())
    return comments + ("\n" if comments else "") + tomli_w.dumps(dict(table))


__all__ = ["read_toml", "toml_text"]
