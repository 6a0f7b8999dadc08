"""Where a big CSV file can be cut into pieces that parse alone: at record ends.

A newline inside a quoted field is data, not a record end, so the file is scanned once with the
CSV state machine the parsers use (RFC 4180 with doubled quotes: a quote opens a quoted field only
at the start of a field; inside one, a doubled quote is a literal quote and a single one closes
it). The scan also counts records, leaving out blank lines as pyarrow and Python's csv module do,
so each piece knows the number of its first data row in the whole file.
"""

from __future__ import annotations

import numba
import numpy as np

_CHUNK = 16 << 20  # bytes scanned per call (one reused buffer)

# Scanner states
_FIELD_START, _UNQUOTED, _QUOTED, _QUOTE_IN_QUOTED = 0, 1, 2, 3
_LF, _CR = 10, 13


@numba.njit(cache=True, nogil=True)
def _scan(data, base, carry, delimiter, quote, step, cuts, cut_records):  # pragma: no cover - compiled
    """Scan bytes `data` (at file offset `base`). `carry` is [state, record has content, records
    ended so far, next cut offset, cuts made]; the first record end by LF at or past the next cut
    offset becomes a cut (the offset just after it), with the number of records before it."""
    state, content, records, next_cut, n_cuts = carry[0], carry[1], carry[2], carry[3], carry[4]
    for i in range(len(data)):
        b = data[i]
        if state == _QUOTED:
            if b == quote:
                state = _QUOTE_IN_QUOTED
            continue
        if state == _QUOTE_IN_QUOTED and b == quote:  # a doubled quote: a literal quote
            state = _QUOTED
            continue
        if b == _LF or b == _CR:  # outside quotes: the record ends (CR LF: at the CR)
            if content:
                records += 1
            content = 0
            state = _FIELD_START
            if b == _LF and base + i + 1 >= next_cut:
                cuts[n_cuts] = base + i + 1
                cut_records[n_cuts] = records
                n_cuts += 1
                next_cut = base + i + 1 + step
            continue
        content = 1
        if b == delimiter:
            state = _FIELD_START
        elif b == quote and state == _FIELD_START:
            state = _QUOTED
        elif state != _UNQUOTED:
            state = _UNQUOTED
    carry[0], carry[1], carry[2], carry[3], carry[4] = state, content, records, next_cut, n_cuts


def record_cuts(path, target_bytes: int, delimiter: str, quote: str) -> list[tuple[int, int]]:
    """(byte offset, records before it) of each cut: the first record end at or past every
    multiple of `target_bytes` after the previous cut. Offset 0 is not a cut; a cut at the end of
    the file is left out. The header counts as a record."""
    import os

    size = os.path.getsize(path)
    buffer = np.empty(min(_CHUNK, max(size, 1)), dtype=np.uint8)
    most = size // max(target_bytes, 1) + 2
    cuts, cut_records = np.zeros(most, np.int64), np.zeros(most, np.int64)
    carry = np.array([_FIELD_START, 0, 0, target_bytes, 0], dtype=np.int64)
    base = 0
    with open(path, "rb") as f:
        while True:
            got = f.readinto(buffer)
            if not got:
                break
            _scan(buffer[:got], base, carry, ord(delimiter), ord(quote), target_bytes, cuts, cut_records)
            base += got
    n = int(carry[4])
    return [(int(c), int(r)) for c, r in zip(cuts[:n], cut_records[:n]) if c < size]
