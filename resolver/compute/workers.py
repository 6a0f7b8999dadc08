"""Worker process pools whose workers die with their parent.

A worker of a `ProcessPoolExecutor` outlives a parent killed with SIGKILL (nothing tells it): it
sits on its call queue, holding memory, until someone kills it. Each worker therefore asks the
kernel for SIGKILL when its parent dies (Linux: prctl PR_SET_PDEATHSIG), and, on every system,
runs a watchdog thread that ends it once its parent is gone (the parent id changes when the
process is re-parented).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

PR_SET_PDEATHSIG = 1  # linux/prctl.h
WATCH_SECONDS = 0.5


def _death_signal() -> bool:
    """Linux only: SIGKILL this process when the thread that started it exits; True if set."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(WATCH_SECONDS)
    os._exit(1)


def die_with_parent(parent: int) -> None:
    """Pool initializer: end this worker when process `parent` dies (see the module docstring)."""
    _death_signal()
    if os.getppid() != parent:  # the parent died before the death signal was set
        os._exit(1)
    threading.Thread(target=_watch, args=(parent,), name="parent-watchdog", daemon=True).start()


def worker_pool(workers: int) -> ProcessPoolExecutor:
    """A spawn-based process pool (fork after pyarrow's threads start is unsafe) whose workers die
    with this process. Use it from the thread that will also shut it down: on Linux a worker's
    death signal fires when the thread that started it ends."""
    return ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"),
                               initializer=die_with_parent, initargs=(os.getpid(),))


def map_in_workers(fn: Callable, items: Sequence, workers: int) -> Iterator:
    """fn over items, results in order: in this process for one worker or one item, else in a
    worker_pool of at most `workers` processes."""
    if workers <= 1 or len(items) <= 1:
        yield from map(fn, items)
        return
    with worker_pool(min(workers, len(items))) as pool:
        yield from pool.map(fn, items)
