"""Giving memory back: freed heap to the system, a file mapping's pages out of the process's RSS."""

from __future__ import annotations

import ctypes
import ctypes.util
import mmap
from typing import Any


def return_freed_memory() -> None:
    """Hand memory freed by Python back to the system (glibc's ``malloc_trim``; elsewhere nothing).

    After a big transient job (the ONNX conversion) glibc keeps the freed heap for reuse, and
    the process's RSS stays at the job's peak for the rest of the run.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def release_pages(array: Any) -> None:
    """Drop the resident pages of a read-only file mapping (an ``np.memmap``) from this process.

    The data stays in the file (and the page cache): a later access reads it back.  Without
    this a pass over a memory-mapped split keeps the whole split in the process's RSS.
    """
    handle = getattr(array, "_mmap", None)
    if handle is not None and hasattr(handle, "madvise"):
        try:
            handle.madvise(mmap.MADV_DONTNEED)
        except (OSError, ValueError):  # closed, or a platform without it
            pass


__all__ = ["release_pages", "return_freed_memory"]
