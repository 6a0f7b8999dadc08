"""The heap trimmer: freed memory stays in the heap for reuse while a stage runs, and goes back to
the system within a trim period, holes between live blocks included."""

import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")

# Fragments the heap: 160 MiB in 64 KiB blocks (under any mmap threshold), every other one freed,
# so the free memory lies in holes glibc never trims on its own. Prints resident MiB after.
PROGRAM = textwrap.dedent("""
    import os, threading, time
    from resolver.compute import heap
    print(heap.return_freed_memory(), sum(t.name == "heap-trim" for t in threading.enumerate()))
    heap.return_freed_memory()  # a second call starts no second trimmer
    print(sum(t.name == "heap-trim" for t in threading.enumerate()))
    blocks = [bytearray(64 * 1024) for _ in range(2560)]
    for b in blocks:
        b[::4096] = b"x" * 16  # touch every page
    del blocks[::2]
    time.sleep(1.0)
    print(int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 2**20)
""")


def _run(trim_seconds: str) -> list[str]:
    env = {**os.environ, "RESOLVER_TRIM_SECONDS": trim_seconds}
    env.pop("MALLOC_MMAP_THRESHOLD_", None)
    done = subprocess.run([sys.executable, "-c", PROGRAM], env=env, capture_output=True, text=True, check=True)
    return done.stdout.split()


def test_the_trimmer_hands_back_the_holes_a_fragmented_heap_keeps():
    started, trimmers, after_second_call, trimmed_mib = _run("0.1")
    assert (started, trimmers, after_second_call) == ("True", "1", "1")
    fixed, no_trimmer, _, kept_mib = _run("0")  # the fixed mmap threshold: 64 KiB blocks stay in the heap
    assert (fixed, no_trimmer) == ("True", "0")
    # 80 MiB of holes: kept without a trimmer, handed back with one
    assert int(kept_mib) - int(trimmed_mib) > 60, (kept_mib, trimmed_mib)
