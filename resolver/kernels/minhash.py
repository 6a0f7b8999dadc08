"""MinHash signatures of page sets and their LSH band keys, for visitor stitching.

A session's signature under permutation j is the least top-32 bits of splitmix64(page ^ seed_j)
over its events' pages (0xFFFFFFFF, "empty", when none has a page). `_cell` is that definition for
one (session, permutation), plain Python over scalars and 1-D arrays, so one source compiles with
`numba.njit` (a `prange` over sessions) and with `numba.cuda.jit` (a grid-stride loop over cells).
All arithmetic is uint64 and wraps the same way on both targets: the builds agree bit for bit.

Band keys and signature agreement are array code over `xp` (numpy or CuPy), integer only.
"""

from __future__ import annotations

import functools
import types

import numpy as np
from numba import njit, prange

from resolver.kernels.hashing import mix64

EMPTY = np.uint32(0xFFFFFFFF)  # a signature slot of a session (or band) without pages


def seeds(permutations: int) -> np.ndarray:
    """The uint64 seed of each permutation."""
    return mix64(np.arange(1, permutations + 1, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15))


def _cell(page_hash, offsets, seed_values, s, j):
    """Signature of session s (events offsets[s]:offsets[s+1]) under permutation j; page 0 is none."""
    best = np.uint64(0xFFFFFFFF)
    seed = seed_values[j]
    for e in range(offsets[s], offsets[s + 1]):
        page = page_hash[e]
        if page != 0:
            h = page ^ seed
            h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
            h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
            h = (h ^ (h >> np.uint64(31))) >> np.uint64(32)
            if h < best:
                best = h
    return best


_cell_cpu = njit(cache=True)(_cell)


@njit(parallel=True, cache=True)
def _signatures_cpu(page_hash, offsets, seed_values, out):
    for s in prange(out.shape[0]):
        for j in range(out.shape[1]):
            out[s, j] = _cell_cpu(page_hash, offsets, seed_values, s, j)


def _signatures_kernel(page_hash, offsets, seed_values, out):
    """Grid-stride loop over (session, permutation) cells; `cuda` and `_cell_dev` are bound by
    _cuda_signatures (the simulator swaps `cuda` out under NUMBA_ENABLE_CUDASIM=1)."""
    width = out.shape[1]
    for i in range(cuda.grid(1), out.shape[0] * width, cuda.gridsize(1)):  # noqa: F821
        s = i // width
        j = i - s * width
        out[s, j] = _cell_dev(page_hash, offsets, seed_values, s, j)  # noqa: F821


@functools.cache
def _cuda_signatures():
    """The CUDA build, made on first use: importing this module never needs CUDA."""
    from numba import cuda

    namespace = {"cuda": cuda, "np": np, "_cell_dev": cuda.jit(device=True)(_cell)}
    return cuda.jit(cache=True)(types.FunctionType(_signatures_kernel.__code__, namespace, "_signatures_kernel"))


def signatures(page_hash, offsets, permutations: int, target: str = "cpu", xp=np):
    """(sessions, permutations) uint32 MinHash signatures: session s holds the events
    offsets[s]:offsets[s+1] of `page_hash` (uint64, 0 for an event without a page).

    target "cuda" computes them on the GPU and returns an `xp` array (CuPy on a GPU, numpy under
    the CUDA simulator); "cpu" returns numpy."""
    n = max(len(offsets) - 1, 0)
    seed_values = seeds(permutations)
    if target == "cpu":
        out = np.empty((n, permutations), dtype=np.uint32)
        if n:
            _signatures_cpu(np.asarray(page_hash, np.uint64), np.asarray(offsets, np.int64), seed_values, out)
        return out
    if target != "cuda":
        raise ValueError(f"unknown target {target!r} (expected cpu or cuda)")
    out = xp.empty((n, permutations), dtype=xp.uint32)
    if n and permutations:
        threads = 256
        blocks = min((n * permutations + threads - 1) // threads, 4096)
        _cuda_signatures()[blocks, threads](xp.asarray(page_hash, dtype=xp.uint64),
                                            xp.asarray(offsets, dtype=xp.int64), xp.asarray(seed_values), out)
    return out


def band_keys(sig, start: int, stop: int):
    """The LSH key of columns start:stop of each signature row (numpy or CuPy): splitmix64 folded
    over the band's values; 0 where the band holds no page at all (no key)."""
    if hasattr(sig, "__cuda_array_interface__"):  # a CuPy array (CuPy is optional)
        import cupy as xp
    else:
        xp = np
    h = xp.zeros(sig.shape[0], dtype=xp.uint64)
    for c in range(start, stop):
        h = mix64(h ^ sig[:, c].astype(xp.uint64))
    has_pages = (sig[:, start:stop] != EMPTY).any(axis=1)
    return xp.where(has_pages, h, xp.uint64(0))


def agreements(a_sig, b_sig):
    """Per row, how many permutations two signatures agree on with a page (integer counts, so
    thresholds on the Jaccard estimate count / permutations are exact on any backend)."""
    return ((a_sig == b_sig) & (a_sig != EMPTY)).sum(axis=1)
