"""URLs that are shown or stored: a password in one is masked (``scheme://user:***@host/…``)."""

from __future__ import annotations

import re

__all__ = ["has_password", "is_masked", "mask_password"]

_USERINFO_PASSWORD = re.compile(r"(://[^:/@\s]+):([^@/\s]+)@")
_MASKED = ":***@"


def mask_password(url: str) -> str:
    """``url`` with the password of its user info replaced by ``***`` (``postgresql://u:***@db/x``)."""
    return _USERINFO_PASSWORD.sub(r"\1" + _MASKED, url)


def has_password(url: str) -> bool:
    """Whether ``url`` carries a password in its user info (``https://user:secret@host``)."""
    return mask_password(url) != url or is_masked(url)


def is_masked(url: str) -> bool:
    """Whether ``url`` is one :func:`mask_password` masked (its password is gone)."""
    return _MASKED in url
