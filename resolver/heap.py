"""Hand freed memory back to the operating system.

glibc's malloc raises its mmap threshold each time a large block is freed (up to 32 MiB), after
which the large numpy arrays a run makes and frees come from the heap arenas, and the space they
leave is kept there, fragmented: a 1M-record run held ~0.6 GiB of freed memory that way. A fixed
threshold keeps every allocation over 128 KiB in its own mapping, returned to the system on free.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_MMAP_THRESHOLD = -3  # mallopt parameter (malloc.h)
MMAP_THRESHOLD = 128 * 1024  # glibc's default starting value, kept fixed


def return_freed_memory() -> bool:
    """Fix glibc's mmap threshold for this process (no-op elsewhere); True when set."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
