"""64-bit string hashing over Arrow buffers: FNV-1a over the UTF-8 bytes, then the splitmix64
finalizer so that every input bit reaches every output bit.

`hash_bytes` is the plain-Python definition (and the test oracle); `hash_strings` computes the same
numbers for a whole Arrow string array in one compiled loop, without making Python strings.
"""

from __future__ import annotations

import functools
import types

import numpy as np
import pyarrow as pa
from numba import njit, prange

FNV_OFFSET = 0xCBF29CE484222325
FNV_PRIME = 0x100000001B3
_MASK = 0xFFFFFFFFFFFFFFFF


def _mix(h: int) -> int:
    h = ((h ^ (h >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    h = ((h ^ (h >> 27)) * 0x94D049BB133111EB) & _MASK
    return h ^ (h >> 31)


def mix64(h):
    """The splitmix64 finalizer over uint64 arrays (numpy or CuPy; wraps around, as intended)."""
    with np.errstate(over="ignore"):
        h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return h ^ (h >> np.uint64(31))


def fnv1a(data: bytes, h: int = FNV_OFFSET) -> int:
    """FNV-1a state after feeding `data` into state `h` (no finalizer)."""
    for byte in data:
        h = ((h ^ byte) * FNV_PRIME) & _MASK
    return h


def hash_bytes(data: bytes, prefix: bytes = b"") -> int:
    """The reference hash of prefix + data; 0 is reserved for "missing" and maps to 1."""
    return _mix(fnv1a(data, fnv1a(prefix))) or 1


def _hash_row(offsets, data, start, i):
    """The hash of row i of an Arrow string buffer (one source for the CPU and the CUDA build)."""
    prime = np.uint64(FNV_PRIME)
    h = start
    for j in range(offsets[i], offsets[i + 1]):
        h = (h ^ np.uint64(data[j])) * prime
    h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    h = h ^ (h >> np.uint64(31))
    return h if h != 0 else np.uint64(1)


_hash_row_cpu = njit(cache=True)(_hash_row)


@njit(parallel=True, cache=True)
def _hash_buffers(offsets: np.ndarray, data: np.ndarray, start: np.uint64, out: np.ndarray) -> None:
    for i in prange(len(out)):
        out[i] = _hash_row_cpu(offsets, data, start, i)


@njit(cache=True)
def _hash_buffers_serial(offsets: np.ndarray, data: np.ndarray, start: np.uint64, out: np.ndarray) -> None:
    for i in range(len(out)):
        out[i] = _hash_row_cpu(offsets, data, start, i)


_SERIAL_BELOW = 4096  # rows: below this, waking the parallel threads costs more than the hashing


def _hash_kernel(offsets, data, start, out):
    """Grid-stride loop over rows; `cuda` and `_row` are bound by _cuda_hash_kernel."""
    for i in range(cuda.grid(1), out.shape[0], cuda.gridsize(1)):  # noqa: F821
        out[i] = _row(offsets, data, start, i)  # noqa: F821


@functools.cache
def _cuda_hash_kernel():
    """The CUDA build of _hash_row in a grid-stride kernel, built on first use (importing this
    module never needs CUDA). The kernel reaches numba.cuda through the global name `cuda`, which
    the CUDA simulator swaps out when NUMBA_ENABLE_CUDASIM=1."""
    from numba import cuda

    namespace = {"cuda": cuda, "np": np, "_row": cuda.jit(device=True)(_hash_row)}
    return cuda.jit(cache=True)(types.FunctionType(_hash_kernel.__code__, namespace, "_hash_kernel"))


def _arrow_buffers(values: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    n = len(values)
    _, offset_buf, data_buf = values.buffers()
    offsets = np.frombuffer(offset_buf, dtype=np.int64)[values.offset : values.offset + n + 1]
    data = np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.zeros(1, np.uint8)
    return offsets, data


def hash_strings(values: pa.Array, prefix: bytes = b"", target: str = "cpu", xp=np):
    """uint64 hash of prefix + each string (see hash_bytes); nulls hash to 0.

    target "cuda" hashes on the GPU (the Arrow buffers are copied there once) and returns an array
    of `xp` (CuPy on a GPU; numpy under the CUDA simulator)."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if not pa.types.is_large_string(values.type):
        values = values.cast(pa.large_string())
    n = len(values)
    start = np.uint64(fnv1a(prefix))
    nulls = values.is_null().to_numpy(zero_copy_only=False) if values.null_count else None
    if n == 0:
        return xp.zeros(0, dtype=xp.uint64)
    offsets, data = _arrow_buffers(values)
    if target == "cpu":
        out = np.zeros(n, dtype=np.uint64)
        (_hash_buffers_serial if n < _SERIAL_BELOW else _hash_buffers)(offsets, data, start, out)
        out = xp.asarray(out)
    elif target == "cuda":
        out = xp.zeros(n, dtype=xp.uint64)
        threads = 256
        blocks = min((n + threads - 1) // threads, 4096)
        _cuda_hash_kernel()[blocks, threads](xp.asarray(offsets), xp.asarray(data), start, out)
    else:
        raise ValueError(f"unknown target {target!r} (expected cpu or cuda)")
    if nulls is not None:
        out[xp.asarray(nulls)] = 0
    return out
