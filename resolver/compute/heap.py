"""Hand freed memory back to the operating system, without paying for fresh pages all the time.

glibc's malloc keeps freed memory in its heap arenas for reuse; the large numpy arrays a run makes
and frees then leave the heap fragmented, and a 1M-record run held ~0.6 GiB of freed memory that
way. An earlier fix put every allocation over 128 KiB in its own mapping (a fixed mmap threshold),
returned on free: but then every temporary array comes in fresh pages the kernel must fault in and
zero, a third of the run's CPU time (2.4M page faults, 9 s of system time in a 22 s run).

So the heap keeps glibc's own (dynamic) threshold, freed memory is reused while a stage runs, and
a daemon thread calls malloc_trim(0) every TRIM_SECONDS, which hands the free pages inside the
heap back to the system (as does the end of every stage). On the 1M-record plain person file:
21.1-25.9 s and 1.39 GiB with the fixed threshold; with a trim every second 17.9-18.6 s and
1.54 GiB (`RESOLVER_TRIM_SECONDS=0` restores the fixed threshold; a user's own
MALLOC_MMAP_THRESHOLD_ is left alone).

Arrow's default pool (mimalloc) keeps freed pages too (~0.1-0.2 GiB at the peak of that run):
Arrow allocates from the system allocator instead, unless ARROW_DEFAULT_MEMORY_POOL says otherwise.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import resource
import sys
import threading
import time

M_MMAP_THRESHOLD = -3  # mallopt parameter (malloc.h)
MMAP_THRESHOLD = 128 * 1024  # glibc's default starting value, kept fixed when trimming is off
TRIM_SECONDS = 1.0

_libc = None
_trimmer: threading.Thread | None = None


def _glibc():
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    return _libc


def _trim_every(seconds: float) -> None:
    while True:
        time.sleep(seconds)
        _glibc().malloc_trim(0)  # ctypes releases the GIL: the run goes on meanwhile


def return_freed_memory() -> bool:
    """Trim glibc's heap every TRIM_SECONDS from a daemon thread (or fix its mmap threshold), and
    let Arrow allocate with malloc (Linux only); True when either is in place."""
    global _trimmer
    if not sys.platform.startswith("linux"):
        return False
    if "ARROW_DEFAULT_MEMORY_POOL" not in os.environ:
        import pyarrow as pa

        pa.set_memory_pool(pa.system_memory_pool())
    seconds = float(os.environ.get("RESOLVER_TRIM_SECONDS", TRIM_SECONDS))
    try:
        if seconds <= 0:
            if "MALLOC_MMAP_THRESHOLD_" in os.environ:  # the user's own setting wins
                return False
            return bool(_glibc().mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
        _glibc().malloc_trim  # not glibc (musl): AttributeError
    except (OSError, AttributeError):
        return False
    if _trimmer is None or not _trimmer.is_alive():  # one per process (a forked worker has none running)
        _trimmer = threading.Thread(target=_trim_every, args=(seconds,), name="heap-trim", daemon=True)
        _trimmer.start()
    return True


def trim() -> None:
    """Hand the heap's free pages back now (the end of a stage), where a trimmer runs."""
    if _trimmer is not None:
        _glibc().malloc_trim(0)


def peak_rss_mb(who: str = "self") -> float:
    """Peak resident memory of this process, or of the largest finished worker process."""
    scope = resource.RUSAGE_SELF if who == "self" else resource.RUSAGE_CHILDREN
    return resource.getrusage(scope).ru_maxrss / 1024
