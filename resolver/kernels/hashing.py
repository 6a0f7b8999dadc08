"""64-bit string hashing over Arrow buffers: FNV-1a over the UTF-8 bytes, then the splitmix64
finalizer so that every input bit reaches every output bit.

`hash_bytes` is the plain-Python definition (and the test oracle); `hash_strings` computes the same
numbers for a whole Arrow string array in one compiled loop, without making Python strings.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from numba import njit

FNV_OFFSET = 0xCBF29CE484222325
FNV_PRIME = 0x100000001B3
_MASK = 0xFFFFFFFFFFFFFFFF


def _mix(h: int) -> int:
    h = ((h ^ (h >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    h = ((h ^ (h >> 27)) * 0x94D049BB133111EB) & _MASK
    return h ^ (h >> 31)


def fnv1a(data: bytes, h: int = FNV_OFFSET) -> int:
    """FNV-1a state after feeding `data` into state `h` (no finalizer)."""
    for byte in data:
        h = ((h ^ byte) * FNV_PRIME) & _MASK
    return h


def hash_bytes(data: bytes, prefix: bytes = b"") -> int:
    """The reference hash of prefix + data; 0 is reserved for "missing" and maps to 1."""
    return _mix(fnv1a(data, fnv1a(prefix))) or 1


@njit(cache=True)
def _hash_buffers(offsets: np.ndarray, data: np.ndarray, start: np.uint64, out: np.ndarray) -> None:
    prime = np.uint64(FNV_PRIME)
    for i in range(len(out)):
        h = start
        for j in range(offsets[i], offsets[i + 1]):
            h = (h ^ np.uint64(data[j])) * prime
        h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        h = h ^ (h >> np.uint64(31))
        out[i] = h if h != 0 else np.uint64(1)


def hash_strings(values: pa.Array, prefix: bytes = b"") -> np.ndarray:
    """uint64 hash of prefix + each string (see hash_bytes); nulls hash to 0."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if not pa.types.is_large_string(values.type):
        values = values.cast(pa.large_string())
    n = len(values)
    out = np.zeros(n, dtype=np.uint64)
    if n == 0:
        return out
    _, offset_buf, data_buf = values.buffers()
    offsets = np.frombuffer(offset_buf, dtype=np.int64)[values.offset : values.offset + n + 1]
    data = np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.zeros(0, np.uint8)
    _hash_buffers(offsets, data, np.uint64(fnv1a(prefix)), out)
    if values.null_count:
        out[values.is_null().to_numpy(zero_copy_only=False)] = 0
    return out
