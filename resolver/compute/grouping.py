"""Sort-based group-by reductions over numpy arrays.

One argsort of the keys serves every aggregate of a table, where each pandas group-by would hash
the keys again; on tens of millions of rows that difference is most of the cost.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
import pandas as pd

_NAT = np.iinfo(np.int64).min


def _order_with_tiebreak(keys: np.ndarray, tiebreak: np.ndarray) -> np.ndarray:
    """Rows ordered by key, then tiebreak: one sort of a combined integer key when it fits in 63
    bits (the usual case), two stable passes otherwise."""
    if len(keys) and keys.dtype.kind in "iu" and tiebreak.dtype.kind in "iub":
        low = tiebreak.astype(np.int64) - int(tiebreak.min())
        span = int(low.max()) + 1
        if int(keys.min()) >= 0 and int(keys.max()) < (np.iinfo(np.int64).max - span) // span:
            return np.argsort(keys.astype(np.int64) * span + low, kind="stable")
    return np.lexsort((tiebreak, keys))


@dataclass(frozen=True)
class Groups:
    order: np.ndarray  # row order that makes equal keys adjacent
    starts: np.ndarray  # first position (in `order`) of each group
    keys: np.ndarray  # the key of each group, ascending

    @classmethod
    def of(cls, keys: np.ndarray, tiebreak: np.ndarray | None = None) -> "Groups":
        """Group rows by key; within a group rows are ordered by `tiebreak` (then by position)."""
        order = np.argsort(keys, kind="stable") if tiebreak is None else _order_with_tiebreak(keys, tiebreak)
        sorted_keys = keys[order]
        if len(sorted_keys) == 0:
            return cls(order, np.zeros(0, np.int64), sorted_keys)
        boundary = np.ones(len(sorted_keys), dtype=bool)
        boundary[1:] = sorted_keys[1:] != sorted_keys[:-1]
        starts = np.flatnonzero(boundary)
        return cls(order, starts, sorted_keys[starts])

    def __len__(self) -> int:
        return len(self.starts)

    def sizes(self) -> np.ndarray:
        return np.diff(np.append(self.starts, len(self.order))).astype(np.int64)

    def first(self, values: np.ndarray) -> np.ndarray:
        """The value of each group's first row (in the original row order)."""
        return values[self.order[self.starts]]

    def sum(self, values: np.ndarray) -> np.ndarray:
        if len(self) == 0:
            return np.zeros(0, dtype=values.dtype)
        return np.add.reduceat(values[self.order], self.starts)

    def any(self, values: np.ndarray) -> np.ndarray:
        return self.sum(values.astype(np.int64)) > 0

    def min_time(self, values: np.ndarray) -> np.ndarray:
        """Earliest datetime64[ns] per group, ignoring NaT (NaT when all are NaT)."""
        ints = values.astype("datetime64[ns]").view(np.int64)
        ints = np.where(ints == _NAT, np.iinfo(np.int64).max, ints)
        out = np.minimum.reduceat(ints[self.order], self.starts) if len(self) else ints[:0]
        return np.where(out == np.iinfo(np.int64).max, _NAT, out).view("datetime64[ns]")

    def max_time(self, values: np.ndarray) -> np.ndarray:
        """Latest datetime64[ns] per group (NaT sorts lowest, so it only wins when all are NaT)."""
        ints = values.astype("datetime64[ns]").view(np.int64)
        out = np.maximum.reduceat(ints[self.order], self.starts) if len(self) else ints[:0]
        return out.view("datetime64[ns]")


# Distinct values by hashing (pandas' hash tables), sorting only the distinct ones: np.unique sorts
# every row (5.5 s for 10M uint64 here, against 1.0 s).
def unique_with_index_inverse(values: np.ndarray, mostly_distinct: bool = False
                              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """np.unique(values, return_index=True, return_inverse=True), by hashing the values and sorting
    only the distinct ones (values repeat: fewer to sort, and no stable sort of every row); or,
    `mostly_distinct`, by one unstable (vectorized) sort of every value, which beats the hash table
    once most values are distinct (10M values, 8M distinct: 2.7 s against 4.7 s)."""
    if mostly_distinct:
        order = np.argsort(values)
        ordered = values[order]
        boundary = np.ones(len(ordered), dtype=bool)
        boundary[1:] = ordered[1:] != ordered[:-1]
        starts = np.flatnonzero(boundary)
        inverse = np.empty(len(values), dtype=np.int64)
        inverse[order] = np.cumsum(boundary) - 1
        first = np.minimum.reduceat(order, starts) if len(values) else np.zeros(0, np.int64)
        return ordered[starts], first.astype(np.int64), inverse
    codes, distinct, order, first = _hashed_unique(values)
    rank = np.empty(len(distinct), dtype=np.int64)
    rank[order] = np.arange(len(distinct))
    return distinct[order], first[order], rank[codes]


def _hashed_unique(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """pd.factorize's codes and distinct values (in order of first appearance), the order that
    sorts the distinct values, and each one's first row."""
    codes, distinct = pd.factorize(values)
    first = np.empty(len(distinct), dtype=np.int64)
    first[codes[::-1]] = np.arange(len(values) - 1, -1, -1)  # the last write is the first occurrence
    return codes, distinct, np.argsort(distinct), first


def sorted_unique(values: np.ndarray) -> np.ndarray:
    """np.unique(values) of a 1-D integer array."""
    return np.sort(pd.unique(values))


def unique_with_index(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """np.unique(values, return_index=True) of a 1-D integer array."""
    _, distinct, order, first = _hashed_unique(values)  # no inverse: one gather of every row less
    return distinct[order], first[order]


def positions_in(sorted_distinct: np.ndarray, values: np.ndarray) -> np.ndarray:
    """np.searchsorted(sorted_distinct, values) where every value is one of `sorted_distinct`: by a
    hash table rather than a binary search per value (which misses the cache once the table is
    large: 4.3 s for 10M lookups in 3M, against 1.5 s)."""
    found = pd.Index(sorted_distinct).get_indexer(values)
    missing = found < 0
    if missing.any():  # not one of them after all: where it would go
        found[missing] = np.searchsorted(sorted_distinct, values[missing])
    return found


@numba.njit(cache=True)
def _repeated_in_groups(group: np.ndarray, a: np.ndarray, b: np.ndarray, n_groups: int) -> np.ndarray:
    n = len(group)
    starts = np.zeros(n_groups + 1, dtype=np.int64)
    for i in range(n):
        starts[group[i] + 1] += 1
    for g in range(n_groups):
        starts[g + 1] += starts[g]
    order = np.empty(n, dtype=np.int64)  # rows by group, in row order inside a group (a counting sort)
    fill = starts[:-1].copy()
    for i in range(n):
        order[fill[group[i]]] = i
        fill[group[i]] += 1
    repeated = np.zeros(n, dtype=np.bool_)
    for g in range(n_groups):
        if starts[g + 1] - starts[g] > _SMALL_GROUP:
            _mark_repeats_sorted(order[starts[g]:starts[g + 1]], a, b, repeated)
            continue
        for x in range(starts[g], starts[g + 1]):
            i = order[x]
            for y in range(starts[g], x):
                j = order[y]
                if a[i] == a[j] and b[i] == b[j]:
                    repeated[i] = True
                    break
    return repeated


_SMALL_GROUP = 32  # rows of a group compared pairwise; a bigger group is sorted (no quadratic blow-up)


@numba.njit(cache=True)
def _mark_repeats_sorted(rows: np.ndarray, a: np.ndarray, b: np.ndarray, repeated: np.ndarray) -> None:
    """Within one big group (`rows` in row order): every row after the first of its (a, b), by
    stable sorts (by a, then by b within each run of equal a): the first of a run is its earliest row."""
    by_a = rows[np.argsort(a[rows], kind="mergesort")]
    start = 0
    while start < len(by_a):
        end = start + 1
        while end < len(by_a) and a[by_a[end]] == a[by_a[start]]:
            end += 1
        run = by_a[start:end]
        run = run[np.argsort(b[run], kind="mergesort")]
        for k in range(1, len(run)):
            if b[run[k]] == b[run[k - 1]]:
                repeated[run[k]] = True
        start = end


def repeated_in_groups(group: np.ndarray, a: np.ndarray, b: np.ndarray, n_groups: int) -> np.ndarray:
    """DataFrame({group, a, b}).duplicated(keep="first") for groups that are mostly small (a
    record's few identifiers): rows counted into their groups, then each compared with the group's
    earlier rows, or, in a group of more than _SMALL_GROUP rows, found by stable sorts.
    pandas factorizes the three columns and their combination instead (4.7 s for 12M rows)."""
    return _repeated_in_groups(np.ascontiguousarray(group, dtype=np.int64), np.ascontiguousarray(a),
                               np.ascontiguousarray(b), int(n_groups))
