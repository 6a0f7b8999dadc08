"""Sort-based group-by reductions over numpy arrays.

One argsort of the keys serves every aggregate of a table, where each pandas group-by would hash
the keys again; on tens of millions of rows that difference is most of the cost.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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
