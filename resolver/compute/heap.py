"""Hand freed memory back to the operating system.

glibc's malloc raises its mmap threshold each time a large block is freed (up to 32 MiB), after
which the large numpy arrays a run makes and frees come from the heap arenas, and the space they
leave is kept there, fragmented: a 1M-record run held ~0.6 GiB of freed memory that way. A fixed
threshold keeps every allocation over 128 KiB in its own mapping, returned to the system on free.

Arrow's default pool (mimalloc) keeps freed pages too (~0.1-0.2 GiB at the peak of that run):
Arrow allocates from the system allocator instead, unless ARROW_DEFAULT_MEMORY_POOL says otherwise.
Neither changes speed measurably.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import resource
import sys

M_MMAP_THRESHOLD = -3  # mallopt parameter (malloc.h)
MMAP_THRESHOLD = 128 * 1024  # glibc's default starting value, kept fixed


def return_freed_memory() -> bool:
    """Fix glibc's mmap threshold for this process and let Arrow allocate with malloc (Linux only);
    True when the threshold is set."""
    if not sys.platform.startswith("linux"):
        return False
    if "ARROW_DEFAULT_MEMORY_POOL" not in os.environ:
        import pyarrow as pa

        pa.set_memory_pool(pa.system_memory_pool())
    if "MALLOC_MMAP_THRESHOLD_" in os.environ:  # the user's own glibc setting wins
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False


def peak_rss_mb(who: str = "self") -> float:
    """Peak resident memory of this process, or of the largest finished worker process."""
    scope = resource.RUSAGE_SELF if who == "self" else resource.RUSAGE_CHILDREN
    return resource.getrusage(scope).ru_maxrss / 1024
