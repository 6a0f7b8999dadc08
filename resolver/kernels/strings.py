"""String similarity over pairs of rows, written once, compiled by numba for the CPU and for CUDA.

A column is encoded once into Unicode code points (`encode`), Arrow style: `offsets` (n+1),
concatenated `codes` (uint32) and `valid`. Each algorithm is a plain Python function over
`(codes_a, start_a, end_a, codes_b, start_b, end_b, scratch, param) -> float` that allocates
nothing and touches only scalars and 1-D arrays, so the same source compiles with `numba.njit`
and with `numba.cuda.jit(device=True)`; `_compile` builds one namespace of them per target. Drivers
feed it pairs: on the CPU a `prange` over chunks of pairs (each chunk owns its scratch), on CUDA a
grid-stride kernel (each thread owns one row of a global scratch array).

Pairs arrive in candidate order (block by block, row-major inside a block: matching/blocking.py),
so the threads of a CUDA warp mostly share their left record and read its string once from cache.

Results are floats in [0, 1], NaN where either record is null (or, by `similarity_levels`, int8
comparison levels cut inside the kernel). Code points, not bytes or UTF-16
units, are the characters, as in Python `str` and rapidfuzz.
"""

from __future__ import annotations

import functools
import math
import types
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
from numba import njit, prange

__all__ = [
    "Encoded",
    "encode",
    "jaro",
    "jaro_winkler",
    "levenshtein_similarity",
    "jaccard_ngrams",
    "jaccard_tokens",
    "similarity",
    "similarity_levels",
    "available_targets",
]

_CHUNK = 2048  # pairs per CPU task: large enough to amortise the scratch allocation
_SERIAL_MAX = 2048  # rows or pairs up to which the CPU runs one thread (see _parallel_and_serial)
_SCRATCH_BUDGET = 2**30  # bytes of CUDA scratch; caps the thread count for very long strings
_THREADS_PER_BLOCK = 128
_MAX_CUDA_THREADS = 1 << 20  # enough resident threads for the largest GPUs (H200: 132 SMs x 2048)


# ----------------------------------------------------------------------------------------------
# Encoding: Arrow UTF-8 -> code points
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Encoded:
    """One string column as code points: row i is `codes[offsets[i]:offsets[i+1]]`, null where
    `valid[i]` is False (a null row has length 0; an empty string is valid with length 0)."""

    offsets: np.ndarray  # int64, n + 1
    codes: np.ndarray  # uint32
    valid: np.ndarray  # bool, n

    def __len__(self) -> int:
        return len(self.valid)

    @property
    def lengths(self) -> np.ndarray:
        return self.offsets[1:] - self.offsets[:-1]

    @functools.cached_property
    def longest(self) -> int:
        """The longest row's length, computed once per column (on a GPU: one device sync, not two
        per kernel call)."""
        return int(self.lengths.max()) if len(self) else 0

    def take(self, rows: np.ndarray) -> Encoded:
        """Just these rows, renumbered from 0 (numpy)."""
        lengths = self.offsets[rows + 1] - self.offsets[rows]
        offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        # each new code's old position: its row's old start plus its place in the row
        source = np.repeat(self.offsets[rows] - offsets[:-1], lengths) + np.arange(offsets[-1], dtype=np.int64)
        return Encoded(offsets, self.codes[source], self.valid[rows])


def _count_code_points(data, byte_offsets, valid, counts):
    """Code points per string = bytes that are not UTF-8 continuation bytes (0b10xxxxxx)."""
    for i in prange(len(counts)):
        c = 0
        if valid[i]:
            for p in range(byte_offsets[i], byte_offsets[i + 1]):
                if (data[p] & 0xC0) != 0x80:
                    c += 1
        counts[i] = c


def _decode_utf8(data, byte_offsets, valid, offsets, codes):
    """Decode each valid string's UTF-8 bytes (Arrow guarantees they are well formed)."""
    for i in prange(len(valid)):
        if not valid[i]:
            continue
        k = offsets[i]
        p = byte_offsets[i]
        end = byte_offsets[i + 1]
        while p < end:
            b = np.uint32(data[p])
            if b < 0x80:
                cp = b
                p += 1
            elif b < 0xE0:
                cp = ((b & 0x1F) << 6) | (data[p + 1] & 0x3F)
                p += 2
            elif b < 0xF0:
                cp = ((b & 0x0F) << 12) | ((data[p + 1] & 0x3F) << 6) | (data[p + 2] & 0x3F)
                p += 3
            else:
                cp = (
                    ((b & 0x07) << 18)
                    | ((data[p + 1] & 0x3F) << 12)
                    | ((data[p + 2] & 0x3F) << 6)
                    | (data[p + 3] & 0x3F)
                )
                p += 4
            codes[k] = cp
            k += 1


def _rebind(fn, namespace: dict, qualname: str | None = None):
    """`fn` with its global names looked up in `namespace` instead of this module."""
    bound = types.FunctionType(fn.__code__, namespace, fn.__name__, fn.__defaults__)
    bound.__qualname__ = qualname or fn.__qualname__
    bound.__module__ = __name__
    bound.__doc__ = fn.__doc__
    return bound


def _parallel_and_serial(fn, namespace: dict, qualname: str):
    """Parallel and serial CPU builds of one source (each with its own cache file). Inputs too
    small to split take the serial one: waking numba's thread pool costs more than the work, up
    to milliseconds per call on a busy machine."""
    parallel = njit(parallel=True, cache=True)(_rebind(fn, namespace, qualname))
    serial = njit(cache=True)(_rebind(fn, namespace, qualname + "_serial"))
    return parallel, serial


_COUNT_CODE_POINTS = _parallel_and_serial(_count_code_points, globals(), "_count_code_points")
_DECODE_UTF8 = _parallel_and_serial(_decode_utf8, globals(), "_decode_utf8")


_STRING_TYPES = {pa.string(), pa.large_string(), pa.null()} | (
    {pa.string_view()} if hasattr(pa, "string_view") else set()
)


def _to_large_string(values) -> pa.Array:
    """Any supported input as one contiguous Arrow large_string array."""
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        arr = values
    elif isinstance(values, pd.Series):
        arr = pa.array(values, from_pandas=True)
    else:
        arr = pa.array(list(values), type=pa.large_string(), from_pandas=True)
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if arr.type not in _STRING_TYPES:
        raise TypeError(f"encode() needs strings, got Arrow type {arr.type}")
    return arr if arr.type == pa.large_string() else arr.cast(pa.large_string())


def encode(values) -> Encoded:
    """Code points of a pandas Series, pyarrow (Chunked)Array or list of str/None, without
    making Python strings: the UTF-8 buffer is decoded by a compiled kernel."""
    arr = _to_large_string(values)
    n = len(arr)
    _, offset_buf, data_buf = arr.buffers()
    if n == 0:
        return Encoded(np.zeros(1, np.int64), np.zeros(0, np.uint32), np.zeros(0, bool))
    byte_offsets = np.frombuffer(offset_buf, dtype=np.int64)[arr.offset : arr.offset + n + 1]
    data = np.zeros(0, np.uint8) if data_buf is None else np.frombuffer(data_buf, dtype=np.uint8)
    if arr.null_count:
        valid = arr.is_valid().to_numpy(zero_copy_only=False)
    else:
        valid = np.ones(n, dtype=bool)
    pick = 1 if n <= _SERIAL_MAX else 0  # (parallel, serial)
    counts = np.empty(n, dtype=np.int64)
    _COUNT_CODE_POINTS[pick](data, byte_offsets, valid, counts)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    codes = np.empty(offsets[-1], dtype=np.uint32)
    _DECODE_UTF8[pick](data, byte_offsets, valid, offsets, codes)
    return Encoded(offsets, codes, valid)


COMPARED_CHARS = 256  # similarities read this many leading characters (see encode_for_comparison)


def encode_for_comparison(values, max_chars: int = COMPARED_CHARS) -> Encoded:
    """`encode` of the first `max_chars` characters of each value. Every similarity costs the
    product of the two lengths per pair: person fields are far shorter, and one pasted document
    of 900,000 characters would otherwise hold a run (or the sync worker) for hours."""
    import pyarrow.compute as pc

    return encode(pc.utf8_slice_codeunits(_to_large_string(values), 0, max_chars))


# ----------------------------------------------------------------------------------------------
# The algorithms, once, for any numba target
# ----------------------------------------------------------------------------------------------

_TABLE = 256  # code points below this get a slot in Jaro's bit-parallel match table
# Jaro's match masks computed in registers (the CUDA build: _cuda_kernels rebinds it to True) rather
# than looked up in the table (the CPU build, where the table stays in cache and is faster)
_IN_REGISTERS = False

# Scratch (int64 slots) a pair needs, as ka * len_a + kb * len_b + kc. Drivers hand it over zeroed.
_WIDTH = {
    "jaro": (1, 1, _TABLE),  # match table, then matched flags for both strings
    "jaro_winkler": (1, 1, _TABLE),
    "levenshtein": (0, 1, 1),  # one DP row over b
    "jaccard_ngrams": (2, 2, 0),  # (start, end) of every gram of a and of b
    "jaccard_tokens": (2, 2, 0),
}


# Each function below is plain Python over scalars and 1-D arrays that allocates nothing, so numba
# compiles it for either target. A function calls its helpers through global names; `_compile`
# rebinds every function to a namespace where those names are the same target's builds.


def _imin(a, b):
    """min of two ints: builtin min/max failed to compile for numba 0.68's CUDA target."""
    return a if a < b else b


def _imax(a, b):
    return a if a > b else b


def _mul_rn(a, b):
    """a * b, never fused with a following add (the CUDA build swaps in libdevice's dmul_rn,
    since NVVM contracts a*b+c into an FMA), so both targets round alike."""
    return a * b


def _compare(ca, s1, e1, cb, s2, e2):
    """Lexicographic order of ca[s1:e1] vs cb[s2:e2]: -1, 0 or 1."""
    n1 = e1 - s1
    n2 = e2 - s2
    m = _imin(n1, n2)
    for k in range(m):
        x = ca[s1 + k]
        y = cb[s2 + k]
        if x != y:
            return -1 if x < y else 1
    if n1 == n2:
        return 0
    return -1 if n1 < n2 else 1


def _swap(sc, i, j):
    t = sc[i]
    sc[i] = sc[j]
    sc[j] = t


def _sift_down(codes, sc, base, count, root, end):
    """Heap step over ranges stored as starts sc[base:base+count], ends right after them."""
    ends = base + count
    while True:
        child = 2 * root + 1
        if child >= end:
            return
        if child + 1 < end and _compare(
            codes, sc[base + child], sc[ends + child],
            codes, sc[base + child + 1], sc[ends + child + 1],
        ) < 0:
            child += 1
        if _compare(
            codes, sc[base + root], sc[ends + root], codes, sc[base + child], sc[ends + child]
        ) >= 0:
            return
        _swap(sc, base + root, base + child)
        _swap(sc, ends + root, ends + child)
        root = child


def _heapsort(codes, sc, base, count):
    """In-place O(k log k) sort of the k ranges (no recursion, no allocation: CUDA safe)."""
    for root in range(count // 2 - 1, -1, -1):
        _sift_down(codes, sc, base, count, root, count)
    for end in range(count - 1, 0, -1):
        _swap(sc, base, base + end)
        _swap(sc, base + count, base + count + end)
        _sift_down(codes, sc, base, count, 0, end)


def _dedup(codes, sc, base, count):
    """Compact sorted ranges to distinct ones (ends stay at base+count); returns how many."""
    if count == 0:
        return 0
    ends = base + count
    u = 1
    for k in range(1, count):
        last = u - 1
        if _compare(codes, sc[base + k], sc[ends + k], codes, sc[base + last], sc[ends + last]):
            sc[base + u] = sc[base + k]
            sc[ends + u] = sc[ends + k]
            u += 1
    return u


def _set_jaccard(ca, cb, sc, na, nb):
    """|A & B| / |A | B| of the range multisets at sc[0:2na] (a) and sc[2na:2na+2nb] (b),
    taken as sets; two empty sets are identical (1.0)."""
    if na == 0 and nb == 0:
        return 1.0
    if na == 0 or nb == 0:
        return 0.0
    bb = 2 * na
    _heapsort(ca, sc, 0, na)
    ua = _dedup(ca, sc, 0, na)
    _heapsort(cb, sc, bb, nb)
    ub = _dedup(cb, sc, bb, nb)
    inter = 0
    i = 0
    j = 0
    while i < ua and j < ub:
        c = _compare(ca, sc[i], sc[na + i], cb, sc[bb + j], sc[bb + nb + j])
        if c == 0:
            inter += 1
            i += 1
            j += 1
        elif c < 0:
            i += 1
        else:
            j += 1
    return inter / (ua + ub - inter)


def _ngram_count(length, n):
    if length == 0:
        return 0
    if length < n:
        return 1
    return length - n + 1


def _fill_ngrams(start, end, n, count, sc, base):
    """Write the count grams of [start, end) as (start, end) ranges at sc[base:]."""
    if end - start < n:
        if count == 1:
            sc[base] = start
            sc[base + 1] = end
        return
    for k in range(count):
        sc[base + k] = start + k
        sc[base + count + k] = start + k + n


def _is_space(c):
    return c == 32 or (c >= 9 and c <= 13)


def _token_count(codes, start, end):
    count = 0
    prev_space = True
    for p in range(start, end):
        sp = _is_space(codes[p])
        if prev_space and not sp:
            count += 1
        prev_space = sp
    return count


def _fill_tokens(codes, start, end, count, sc, base):
    k = 0
    p = start
    while p < end:
        while p < end and _is_space(codes[p]):
            p += 1
        if p == end:
            return
        sc[base + k] = p
        while p < end and not _is_space(codes[p]):
            p += 1
        sc[base + count + k] = p
        k += 1


def _jaccard_ngrams(ca, sa, ea, cb, sb, eb, sc, param):
    """Jaccard of the sets of n-grams (n = param); a non-empty string shorter than n is one gram."""
    n = int(param)
    na = _ngram_count(ea - sa, n)
    nb = _ngram_count(eb - sb, n)
    _fill_ngrams(sa, ea, n, na, sc, 0)
    _fill_ngrams(sb, eb, n, nb, sc, 2 * na)
    return _set_jaccard(ca, cb, sc, na, nb)


def _jaccard_tokens(ca, sa, ea, cb, sb, eb, sc, param):
    """Jaccard of the sets of whitespace-separated tokens."""
    na = _token_count(ca, sa, ea)
    nb = _token_count(cb, sb, eb)
    _fill_tokens(ca, sa, ea, na, sc, 0)
    _fill_tokens(cb, sb, eb, nb, sc, 2 * na)
    return _set_jaccard(ca, cb, sc, na, nb)


def _jaro_score(common, transposed, la, lb):
    """rapidfuzz's formula: half the out-of-order matches, floored, count as transpositions."""
    if common == 0:
        return 0.0
    m = float(common)
    return (m / la + m / lb + (m - transposed // 2) / m) / 3.0


def _fits_table(ca, sa, ea):
    """Whether every code point of ca[sa:ea] has a slot in the match table."""
    for p in range(sa, ea):
        if ca[p] >= _TABLE:
            return False
    return True


def _first_free(positions, lo, hi, a_matched):
    """The lowest bit of `positions` in the window [lo, hi) not matched yet (0: none)."""
    free = positions & (((1 << (hi - lo)) - 1) << lo) & ~a_matched
    return free & -free


def _jaro_bitparallel(ca, sa, la, cb, sb, lb, bound, table):
    """Jaro matching on bit masks, with no unpredictable branch in the match loop; the same
    matches as _jaro_flags. table[c] holds the positions of c in a as bits; it arrives zeroed
    and is left zeroed. Needs every char of a below _TABLE and la, lb < 64, so that masks stay
    below 2**63 and fit int64 on every target (the CUDA simulator computes with Python ints)."""
    for i in range(la):
        table[ca[sa + i]] |= 1 << i
    a_matched = 0
    b_matched = 0
    common = 0
    for j in range(lb):
        c = cb[sb + j]
        lo = _imax(0, j - bound)
        hi = _imin(la, j + bound + 1)
        if c < _TABLE and lo < hi:
            first = _first_free(table[c], lo, hi, a_matched)
            a_matched |= first
            hit = 1 if first != 0 else 0
            b_matched |= hit << j
            common += hit
    transposed = 0
    rest = a_matched
    for j in range(lb):  # the i-th matched char of b meets the i-th matched char of a
        matched = (b_matched >> j) & 1
        first = rest & -rest
        c = cb[sb + j]
        in_a = table[c] if c < _TABLE else 0
        transposed += matched & (1 if (in_a & first) == 0 else 0)
        rest ^= first & -matched
    for i in range(la):
        table[ca[sa + i]] = 0
    return _jaro_score(common, transposed, la, lb)


def _jaro_registers(ca, sa, la, cb, sb, lb, bound):
    """Jaro matching on bit masks like _jaro_bitparallel, with each char's positions in a
    computed from a (_char_mask) instead of looked up in a table: no memory but the two strings,
    any code point. Needs la, lb < 63."""
    a_matched = 0
    b_matched = 0
    common = 0
    for j in range(lb):
        lo = _imax(0, j - bound)
        hi = _imin(la, j + bound + 1)
        if lo < hi:
            first = _first_free(_char_mask(ca, sa, la, cb[sb + j]), lo, hi, a_matched)
            a_matched |= first
            b_matched |= (1 if first != 0 else 0) << j
            common += 1 if first != 0 else 0
    transposed = 0
    i = 0
    for j in range(lb):  # the i-th matched char of b meets the i-th matched char of a
        if (b_matched >> j) & 1:
            while ((a_matched >> i) & 1) == 0:
                i += 1
            if ca[sa + i] != cb[sb + j]:
                transposed += 1
            i += 1
    return _jaro_score(common, transposed, la, lb)


def _jaro_flags(ca, sa, la, cb, sb, lb, bound, flags):
    """Jaro matching with one flag per char, for any lengths and code points."""
    for k in range(la + lb):
        flags[k] = 0
    common = 0
    for j in range(lb):
        c = cb[sb + j]
        for i in range(_imax(0, j - bound), _imin(la, j + bound + 1)):
            if ca[sa + i] == c and flags[i] == 0:  # the rarer test first: fewer mispredictions
                flags[i] = 1
                flags[la + j] = 1
                common += 1
                break
    transposed = 0
    i = 0
    for j in range(lb):
        if flags[la + j] != 0:
            while flags[i] == 0:
                i += 1
            if ca[sa + i] != cb[sb + j]:
                transposed += 1
            i += 1
    return _jaro_score(common, transposed, la, lb)


def _jaro(ca, sa, ea, cb, sb, eb, sc, param):
    """Jaro as rapidfuzz computes it: each char of b, in order, takes the first unmatched equal
    char of a within max(len)/2 - 1 positions. sc[:_TABLE] is a zeroed match table, sc[_TABLE:]
    holds flags for strings the bit-parallel path cannot take."""
    la = ea - sa
    lb = eb - sb
    if la == 0 and lb == 0:
        return 1.0
    if la == 0 or lb == 0:
        return 0.0
    bound = _imax(_imax(la, lb) // 2 - 1, 0)
    if _IN_REGISTERS and la < 63 and lb < 63:  # a GPU: a table per thread would sit in global memory
        return _jaro_registers(ca, sa, la, cb, sb, lb, bound)
    if la < 64 and lb < 64 and _fits_table(ca, sa, ea):  # a CPU: the table stays in cache, and is faster
        return _jaro_bitparallel(ca, sa, la, cb, sb, lb, bound, sc)
    return _jaro_flags(ca, sa, la, cb, sb, lb, bound, sc[_TABLE:])


def _jaro_winkler(ca, sa, ea, cb, sb, eb, sc, param):
    """Jaro plus the Winkler boost (param = prefix weight, common prefix up to 4) when > 0.7."""
    sim = _jaro(ca, sa, ea, cb, sb, eb, sc, param)
    if sim > 0.7:
        limit = _imin(_imin(ea - sa, eb - sb), 4)
        prefix = 0
        while prefix < limit and ca[sa + prefix] == cb[sb + prefix]:
            prefix += 1
        sim += _mul_rn(prefix * param, 1.0 - sim)
    return sim


def _char_mask(ca, sa, la, c):
    """Bit i set where a[i] == c (la < 63): computed from a, not looked up in a table, so on a
    GPU it stays in registers instead of a per-thread table in global memory."""
    mask = 0
    for i in range(la):
        if ca[sa + i] == c:
            mask |= 1 << i
    return mask


def _levenshtein_bitparallel(ca, sa, la, cb, sb, lb):
    """Edit distance by Myers' bit-vector algorithm (Hyyrö's formulation): one column of the DP
    as two bit vectors of vertical +1/-1 steps, advanced a whole column per char of b. Needs
    1 <= la < 63 so that every mask and sum stays below 2**63 on every target."""
    full = (1 << la) - 1
    last = 1 << (la - 1)
    pv = full
    mv = 0
    score = la
    for j in range(lb):
        eq = _char_mask(ca, sa, la, cb[sb + j])
        xv = eq | mv
        xh = ((((eq & pv) + pv) & full) ^ pv) | eq
        ph = mv | (full & ~(xh | pv))
        mh = pv & xh
        if ph & last:
            score += 1
        elif mh & last:
            score -= 1
        ph = ((ph << 1) | 1) & full
        mh = (mh << 1) & full
        pv = mh | (full & ~(xv | ph))
        mv = ph & xv
    return score


def _levenshtein(ca, sa, ea, cb, sb, eb, sc, param):
    """1 - distance / max(len), after trimming the common prefix and suffix (they never change
    the distance): bit-parallel when the rest of a is shorter than 63, else unit-cost DP over
    one row of b."""
    la = ea - sa
    lb = eb - sb
    longest = _imax(la, lb)
    if longest == 0:
        return 1.0
    while sa < ea and sb < eb and ca[sa] == cb[sb]:
        sa += 1
        sb += 1
    while sa < ea and sb < eb and ca[ea - 1] == cb[eb - 1]:
        ea -= 1
        eb -= 1
    if sa == ea or sb == eb:  # one side used up: the rest of the other is inserted
        return 1.0 - _imax(ea - sa, eb - sb) / longest
    if ea - sa < 63:
        return 1.0 - _levenshtein_bitparallel(ca, sa, ea - sa, cb, sb, eb - sb) / longest
    n = eb - sb
    for j in range(n + 1):
        sc[j] = j
    for i in range(ea - sa):
        x = ca[sa + i]
        diag = sc[0]
        sc[0] = i + 1
        for j in range(n):
            up = sc[j + 1]
            best = diag if x == cb[sb + j] else diag + 1
            if up + 1 < best:
                best = up + 1
            if sc[j] + 1 < best:
                best = sc[j] + 1
            diag = up
            sc[j + 1] = best
    return 1.0 - sc[n] / longest


_ALGORITHMS = {
    "jaro": _jaro,
    "jaro_winkler": _jaro_winkler,
    "levenshtein": _levenshtein,
    "jaccard_ngrams": _jaccard_ngrams,
    "jaccard_tokens": _jaccard_tokens,
}
_HELPERS = (
    _imin, _imax, _mul_rn, _jaro_score, _fits_table, _first_free, _jaro_bitparallel, _jaro_registers,
    _jaro_flags, _char_mask, _levenshtein_bitparallel,
    _compare, _swap, _sift_down, _heapsort, _dedup, _set_jaccard,
    _ngram_count, _fill_ngrams, _is_space, _token_count, _fill_tokens, *_ALGORITHMS.values(),
)


def _compile(jit, extra: dict) -> dict:
    """A namespace holding every helper and algorithm compiled with `jit` for one target;
    `extra` adds target-specific names and replaces helpers of the same name.

    Not closures: numba's on-disk cache keys closures by their (per-process) captured dispatchers,
    so it would miss every time; functions whose globals are a plain namespace cache normally."""
    namespace = {"__name__": __name__, "math": math, "np": np, "_TABLE": _TABLE, "_IN_REGISTERS": _IN_REGISTERS,
                 **extra}
    for fn in _HELPERS:
        if fn.__name__ not in extra:
            namespace[fn.__name__] = jit(_rebind(fn, namespace))
    return namespace


# ----------------------------------------------------------------------------------------------
# Drivers
# ----------------------------------------------------------------------------------------------


def _cpu_drive(ca, oa, va, cb, ob, vb, left, right, ka, kb, kc, param, out):
    """out[k] = _core(pair k): a parallel loop over chunks of pairs; each chunk sizes one scratch
    to its own longest strings. `_core` is bound by _cpu_drivers."""
    n = len(left)
    for c in prange((n + _CHUNK - 1) // _CHUNK):
        lo = c * _CHUNK
        hi = min(n, lo + _CHUNK)
        longest_a = 0
        longest_b = 0
        for k in range(lo, hi):
            longest_a = max(longest_a, oa[left[k] + 1] - oa[left[k]])
            longest_b = max(longest_b, ob[right[k] + 1] - ob[right[k]])
        scratch = np.zeros(ka * longest_a + kb * longest_b + kc, dtype=np.int64)
        for k in range(lo, hi):
            i = left[k]
            j = right[k]
            if va[i] and vb[j]:
                out[k] = _core(  # noqa: F821
                    ca, oa[i], oa[i + 1], cb, ob[j], ob[j + 1], scratch, param
                )
            else:
                out[k] = np.nan


def _cuda_drive(ca, oa, va, cb, ob, vb, left, right, width, param, scratch, cut, out):
    """out[k] = _out(_core(pair k), cut) in a grid-stride loop; thread t works in its own scratch
    row. `_core`, `_out` (the similarity itself, or its level by `cut`) and `cuda` are bound by
    _cuda_kernels."""
    t = cuda.grid(1)  # noqa: F821
    row = scratch[t * width : (t + 1) * width]
    for q in range(width):
        row[q] = 0
    for k in range(t, left.shape[0], cuda.gridsize(1)):  # noqa: F821
        i = left[k]
        j = right[k]
        sim = math.nan
        if va[i] and vb[j]:
            sim = _core(ca, oa[i], oa[i + 1], cb, ob[j], ob[j + 1], row, param)  # noqa: F821
        out[k] = _out(sim, cut)  # noqa: F821


def _similarity_out(sim, cut):
    return sim


def _level_out(sim, cut):
    """The comparison level of a similarity; `cut` is (null level, level below every threshold,
    level of the first threshold, then the thresholds, descending)."""
    if math.isnan(sim):
        return int(cut[0])
    for q in range(3, cut.shape[0]):
        if sim >= cut[q]:
            return int(cut[2]) + q - 3
    return int(cut[1])


def _cpu_drivers() -> dict:
    """(parallel, serial) driver per algorithm, each with its own qualname and cache file."""
    compiled = _compile(njit(cache=True), {})
    drivers = {}
    for name in _ALGORITHMS:
        namespace = {**compiled, "prange": prange, "_CHUNK": _CHUNK, "_core": compiled[f"_{name}"]}
        drivers[name] = _parallel_and_serial(_cpu_drive, namespace, f"_cpu_drive_{name}")
    return drivers


_CPU_DRIVERS = _cpu_drivers()  # compiled lazily, on first call of each


@functools.cache
def _cuda_kernels() -> dict:
    """Build the CUDA kernels on first use, so importing this module never needs CUDA. The kernel
    reaches numba.cuda through the global name `cuda`, which the CUDA simulator swaps out."""
    from numba import config, cuda

    extra = {"cuda": cuda, "_IN_REGISTERS": True}  # a compile-time constant: the other branch is dropped
    if not config.ENABLE_CUDASIM:  # the simulator's libdevice is a stub; Python never fuses
        from numba.cuda import libdevice

        extra["_mul_rn"] = libdevice.dmul_rn
    compiled = _compile(cuda.jit(device=True), extra)
    # Cached like the CPU builds (a second process loads the machine code instead of compiling for
    # minutes); each kernel has its own qualname, hence its own cache file.
    kernels = {}
    for out, kind in ((_similarity_out, ""), (_level_out, " levels")):
        write = cuda.jit(device=True)(_rebind(out, compiled))
        for name in _ALGORITHMS:
            namespace = {**compiled, "_core": compiled[f"_{name}"], "_out": write}
            qualname = f"_cuda_drive_{name}" + kind.replace(" ", "_")
            kernels[name + kind] = cuda.jit(cache=True)(_rebind(_cuda_drive, namespace, qualname))
    return kernels


def available_targets() -> list[str]:
    """"cpu" always; "cuda" when numba sees a GPU (or the CUDA simulator is on)."""
    from numba import cuda

    return ["cpu", "cuda"] if cuda.is_available() else ["cpu"]


def _is_device_array(x) -> bool:
    return hasattr(x, "__cuda_array_interface__")


def _array_module(*arrays):
    """cupy when any input lives on the GPU, else numpy (the `xp` convention of DESIGN.md)."""
    if any(_is_device_array(a) for a in arrays):
        try:
            import cupy
        except ImportError as exc:  # pragma: no cover - needs a GPU array without cupy
            raise TypeError("GPU arrays as inputs need cupy installed") from exc
        return cupy
    return np


def _check_rows(rows, n: int, side: str) -> None:
    if len(rows) and (int(rows.min()) < 0 or int(rows.max()) >= n):
        raise IndexError(f"{side} row index out of range for a column of {n} strings")


def _run_cpu(name, a: Encoded, b: Encoded, left, right, param: float) -> np.ndarray:
    out = np.empty(len(left), dtype=np.float64)
    ka, kb, kc = _WIDTH[name]
    parallel, serial = _CPU_DRIVERS[name]
    (serial if len(left) <= _SERIAL_MAX else parallel)(
        a.codes, a.offsets, a.valid, b.codes, b.offsets, b.valid, left, right,
        ka, kb, kc, param, out,
    )
    return out


def _launch_cuda(kernel: str, a: Encoded, b: Encoded, left, right, param: float, xp, out, cut) -> None:
    """Run the CUDA kernel `kernel` over the pairs into `out` (a device array; with the simulator a
    numpy one), inputs moved through CuPy's memory pool, scratch sized by the columns' longest
    strings; `cut`: _level_out's, for a levels kernel."""
    from numba import cuda

    name = kernel.split(" ")[0]
    dev = {}
    for key, arr in (("ca", a.codes), ("oa", a.offsets), ("va", a.valid), ("cb", b.codes),
                     ("ob", b.offsets), ("vb", b.valid), ("left", left), ("right", right)):
        if key in ("va", "vb"):
            arr = arr.view(np.uint8) if isinstance(arr, np.ndarray) else arr.astype(xp.uint8)
        if xp is not np and not _is_device_array(arr):
            arr = xp.asarray(arr)  # through CuPy's memory pool, not a fresh driver allocation
        dev[key] = cuda.as_cuda_array(arr) if _is_device_array(arr) else cuda.to_device(arr)
    n = len(left)
    ka, kb, kc = _WIDTH[name]
    # Scratch sized by each column's longest string (known once per column), not by the longest of
    # these pairs (a gather and a device sync per side on every call).
    width = max(1, ka * a.longest + kb * b.longest + kc)
    threads = min(n, _MAX_CUDA_THREADS, max(1, _SCRATCH_BUDGET // (8 * width)))
    blocks = (threads + _THREADS_PER_BLOCK - 1) // _THREADS_PER_BLOCK
    cells = blocks * _THREADS_PER_BLOCK * width
    scratch = cuda.as_cuda_array(xp.empty(cells, dtype=np.int64)) if xp is not np else cuda.device_array(cells, np.int64)
    cut = cuda.as_cuda_array(xp.asarray(cut)) if xp is not np else cuda.to_device(cut)
    _cuda_kernels()[kernel][blocks, _THREADS_PER_BLOCK](
        dev["ca"], dev["oa"], dev["va"], dev["cb"], dev["ob"], dev["vb"], dev["left"], dev["right"],
        width, param, scratch, cut, out,
    )


def _device_out(xp, n: int, dtype):
    """(what the caller gets, what the kernel writes): one CuPy array, or with the simulator a numpy
    array and its simulated device copy."""
    from numba import cuda

    if xp is not np:
        out = xp.empty(n, dtype=dtype)
        return out, cuda.as_cuda_array(out)
    return None, cuda.device_array(n, dtype=dtype)


def _run_cuda(name, a: Encoded, b: Encoded, left, right, param: float, xp):
    out, d_out = _device_out(xp, len(left), np.float64)
    _launch_cuda(name, a, b, left, right, param, xp, d_out, np.zeros(1))
    return out if xp is not np else d_out.copy_to_host()


def _check_pairs(enc: Encoded, left, right, other: Encoded | None):
    """(other side's encoding, array module, left, right as contiguous int64), validated."""
    b = enc if other is None else other
    xp = _array_module(left, right, enc.codes, b.codes)
    left = xp.ascontiguousarray(xp.asarray(left, dtype=np.int64).reshape(-1))
    right = xp.ascontiguousarray(xp.asarray(right, dtype=np.int64).reshape(-1))
    if len(left) != len(right):
        raise ValueError(f"left and right differ in length ({len(left)} vs {len(right)})")
    if xp is not np and len(left):  # one device sync for both sides, not four
        outside = (left.min() < 0) | (left.max() >= len(enc)) | (right.min() < 0) | (right.max() >= len(b))
        if not bool(outside):
            return b, xp, left, right
    _check_rows(left, len(enc), "left")
    _check_rows(right, len(b), "right")
    return b, xp, left, right


def _check_target(target: str, xp) -> None:
    if target == "cpu":
        if xp is not np:
            raise TypeError('target="cpu" needs numpy row indices, got GPU arrays')
        return
    if target == "cuda":
        if "cuda" not in available_targets():
            raise RuntimeError(
                'target="cuda" needs a GPU that numba can see (numba.cuda.is_available() is '
                'False here); use target="cpu"'
            )
        return
    raise ValueError(f"unknown target {target!r}; choose from {available_targets()}")


def _similarity(name, enc: Encoded, left, right, other, target: str, param: float):
    """Validate, then run `name` over the pairs on `target`."""
    b, xp, left, right = _check_pairs(enc, left, right, other)
    _check_target(target, xp)
    if target == "cpu":
        return _run_cpu(name, enc, b, left, right, param)
    if len(left) == 0:
        return xp.empty(0, dtype=np.float64)
    return _run_cuda(name, enc, b, left, right, param, xp)


# ----------------------------------------------------------------------------------------------
# Public functions
# ----------------------------------------------------------------------------------------------


def jaro(enc: Encoded, left, right, *, other: Encoded | None = None, target: str = "cpu"):
    """Jaro similarity of rows `left` of `enc` with rows `right` of `other` (default: `enc`),
    equal to rapidfuzz.distance.Jaro.similarity; NaN where either is null."""
    return _similarity("jaro", enc, left, right, other, target, 0.0)


def jaro_winkler(
    enc: Encoded, left, right, prefix_weight: float = 0.1, *, other: Encoded | None = None,
    target: str = "cpu",
):
    """Jaro-Winkler, equal to rapidfuzz.distance.JaroWinkler.similarity(a, b, prefix_weight):
    the common prefix (at most 4) boosts only scores above 0.7."""
    if not 0.0 <= prefix_weight <= 0.25:
        raise ValueError("prefix_weight must be between 0 and 0.25")
    return _similarity("jaro_winkler", enc, left, right, other, target, float(prefix_weight))


def levenshtein_similarity(
    enc: Encoded, left, right, *, other: Encoded | None = None, target: str = "cpu"
):
    """1 - Levenshtein distance / longer length (two empty strings: 1.0), equal to
    rapidfuzz.distance.Levenshtein.normalized_similarity."""
    return _similarity("levenshtein", enc, left, right, other, target, 0.0)


def jaccard_ngrams(
    enc: Encoded, left, right, n: int = 2, *, other: Encoded | None = None, target: str = "cpu"
):
    """|A & B| / |A | B| where A, B are the SETS of n-code-point substrings of each string.

    A non-empty string shorter than n contributes itself as its only gram; an empty string has no
    grams. Two empty sets score 1.0, one empty set 0.0. Grams are compared exactly (no hashing).
    """
    if int(n) < 1:
        raise ValueError("n must be at least 1")
    return _similarity("jaccard_ngrams", enc, left, right, other, target, float(int(n)))


def jaccard_tokens(enc: Encoded, left, right, *, other: Encoded | None = None, target: str = "cpu"):
    """|A & B| / |A | B| where A, B are the SETS of tokens: maximal runs of characters other
    than ASCII whitespace (space, \\t, \\n, \\v, \\f, \\r). A string with no tokens has the
    empty set: two such score 1.0, one 0.0."""
    return _similarity("jaccard_tokens", enc, left, right, other, target, 0.0)


def similarity(name: str, enc: Encoded, left, right, param: float = 0.0, *, other: Encoded | None = None,
               target: str = "cpu"):
    """The similarity of each pair by algorithm `name` (a key of the kernels; `param` as its
    function takes it: Jaro-Winkler's prefix weight, the n of n-grams)."""
    if name not in _ALGORITHMS:
        raise ValueError(f"unknown algorithm {name!r}; choose from {sorted(_ALGORITHMS)}")
    return _similarity(name, enc, left, right, other, target, float(param))


def similarity_levels(name: str, enc: Encoded, left, right, thresholds, first: int, otherwise: int,
                      param: float = 0.0, null: int = 0, *, other: Encoded | None = None, target: str = "cpu"):
    """The comparison level (int8) of each pair by algorithm `name` (a key of the kernels: "jaro",
    "jaro_winkler", "levenshtein", "jaccard_ngrams", "jaccard_tokens"; `param` as their functions
    take it): first + q for the first of the descending `thresholds` the similarity reaches, else
    `otherwise`; `null` where either side is null. On CUDA the kernel writes the levels itself (one
    byte a pair out of the kernel, not an eight-byte similarity and a pass over it); on the CPU
    they are cut from the similarities."""
    if name not in _ALGORITHMS:
        raise ValueError(f"unknown algorithm {name!r}; choose from {sorted(_ALGORITHMS)}")
    b, xp, left, right = _check_pairs(enc, left, right, other)
    _check_target(target, xp)
    cuts = np.asarray(thresholds, dtype=np.float64)
    if target == "cpu":
        sim = _run_cpu(name, enc, b, left, right, param)
        level = np.full(len(sim), otherwise, dtype=np.int8)
        level[np.isnan(sim)] = null
        undecided = ~np.isnan(sim)
        for q, cut in enumerate(cuts):
            hit = undecided & (sim >= cut)
            level[hit] = first + q
            undecided &= ~hit
        return level
    out, d_out = _device_out(xp, len(left), np.int8)
    if len(left):
        cut = np.concatenate([[null, otherwise, first], cuts]).astype(np.float64)
        _launch_cuda(f"{name} levels", enc, b, left, right, param, xp, d_out, cut)
    return out if xp is not np else d_out.copy_to_host()
