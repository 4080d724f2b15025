"""URLs that are shown or stored: a password in one is masked (``scheme://user:***@host/…``)."""

from __future__ import annotations

import re

__all__ = ["has_password", "mask_password"]

_USERINFO_PASSWORD = re.compile(r"(://[^:/@\s]+):([^@/\s]+)@")


def mask_password(url: str) -> str:
    """``url`` with the password of its user info replaced by ``***`` (``postgresql://u:***@db/x``)."""
    return _USERINFO_PASSWORD.sub(r"\1:***@", url)


def has_password(url: str) -> bool:
    """Whether ``url`` carries a password in its user info (``https://user:secret@host``)."""
    return mask_password(url) != url or ":***@" in url
