"""The time numba spends compiling kernels, or loading them from its cache, apart from the work.

Kernels are compiled with cache=True: the first run on a machine compiles them (seconds) and writes
the machine code next to the sources (or to numba's user-wide cache folder where that is read-only),
and every later process loads it in milliseconds. The StageLog reads this clock around each stage so
that a run's summary says how much of a stage was that one-off compile (`jit_seconds`).
"""

from __future__ import annotations

import threading
import time

from numba.core import event


class JitClock(event.Listener):
    """Wall seconds inside numba's compile events. Nested events (a kernel compiling the functions
    it calls) count once; numba compiles under one global lock, so events never overlap."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._depth = 0
        self._started = 0.0
        self._lock = threading.Lock()

    def on_start(self, ev: event.Event) -> None:
        with self._lock:
            if self._depth == 0:
                self._started = time.perf_counter()
            self._depth += 1

    def on_end(self, ev: event.Event) -> None:
        with self._lock:
            self._depth -= 1
            if self._depth == 0:
                self.seconds += time.perf_counter() - self._started


JIT_CLOCK = JitClock()
event.register("numba:compile", JIT_CLOCK)


def jit_seconds() -> float:
    """Seconds this process has spent compiling (or loading compiled) numba kernels so far."""
    return JIT_CLOCK.seconds
