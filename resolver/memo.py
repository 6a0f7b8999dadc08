"""Normalization memo: raw value -> normalized form, per normalizer, carried from run to run in the
state so that an incremental run normalizes only values it has not seen before.

Normalizers are pure functions of the value (and of the configuration: a state's memo is used only
with the configuration digest it was made under), so a remembered result is exactly what normalizing
again would give. The memo a run hands on holds the distinct values that run saw, no more: values
that left the sources (or were erased) leave the memo with them.

The memo in use is set for a block of code (`with memo.active():`), in the main process and in
each ingest worker, and the normalizing functions consult it through `memoized`.
"""

from __future__ import annotations

import contextvars
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd

_ACTIVE: contextvars.ContextVar["NormalizationMemo | None"] = contextvars.ContextVar("memo", default=None)


@dataclass
class NormalizationMemo:
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)  # name -> raw, out0[, out1]
    seen: dict[str, list[pd.DataFrame]] = field(default_factory=dict)  # this run's lookups
    hits: int = 0
    misses: int = 0
    _index: dict[str, pd.Index] = field(default_factory=dict, repr=False)

    @contextmanager
    def active(self):
        token = _ACTIVE.set(self)
        try:
            yield self
        finally:
            _ACTIVE.reset(token)

    def lookup(self, name: str, distinct: pd.Series, fn: Callable[[pd.Series], tuple]) -> tuple:
        """fn(distinct) (a tuple of Series aligned with `distinct`), computing only unseen values."""
        distinct = distinct.reset_index(drop=True)
        table = self.tables.get(name)
        if table is None or not len(table) or not len(distinct):
            results = fn(distinct)
            self.misses += len(distinct)
        else:
            if name not in self._index:
                self._index[name] = pd.Index(table["raw"].astype("str"))
            position = self._index[name].get_indexer(distinct.astype("str"))
            miss = position < 0
            self.hits += int((~miss).sum())
            self.misses += int(miss.sum())
            computed = fn(distinct[miss].reset_index(drop=True)) if miss.any() else None
            order = np.argsort(np.concatenate([np.flatnonzero(~miss), np.flatnonzero(miss)]), kind="stable")
            results = []
            for i in range(len(table.columns) - 1):
                known = table[f"out{i}"].take(position[~miss]).reset_index(drop=True)
                parts = [known] if computed is None else [known, computed[i].reset_index(drop=True)]
                joined = pd.concat(parts, ignore_index=True) if len(parts) > 1 else known
                results.append(joined.take(order).reset_index(drop=True).astype(known.dtype if computed is None
                                                                                else computed[i].dtype))
            results = tuple(results)
        frame = pd.DataFrame({"raw": distinct.astype("str"), **{f"out{i}": r.reset_index(drop=True) for i, r in enumerate(results)}})
        self.seen.setdefault(name, []).append(frame)
        return results

    def absorb(self, seen: dict[str, list[pd.DataFrame]], hits: int, misses: int) -> None:
        """Take in what an ingest worker looked up."""
        for name, frames in seen.items():
            self.seen.setdefault(name, []).extend(frames)
        self.hits += hits
        self.misses += misses

    def handed_on(self) -> dict[str, pd.DataFrame]:
        """The memo for the next run: every distinct value this run looked up, once."""
        return {name: pd.concat(frames, ignore_index=True).drop_duplicates("raw").reset_index(drop=True)
                for name, frames in self.seen.items()}

    def stats(self) -> dict:
        total = self.hits + self.misses
        return {"values_looked_up": total, "remembered": self.hits, "normalized": self.misses,
                "remembered_share": round(self.hits / total, 4) if total else 0.0}


def memoized(name: str, distinct: pd.Series, fn: Callable[[pd.Series], tuple]) -> tuple:
    """fn over distinct raw values, through the active memo when there is one."""
    memo = _ACTIVE.get()
    if memo is None:
        return fn(distinct)
    return memo.lookup(name, distinct, fn)


def memoized_column(name: str, values: pd.Series, fn: Callable[[pd.Series], pd.Series]) -> pd.Series:
    """fn over a whole column (with repeats), normalizing each distinct value once and remembering it."""
    if _ACTIVE.get() is None:
        return fn(values)
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    distinct = pd.Series(uniques, dtype=values.dtype if len(uniques) else "str")
    (out,) = memoized(name, distinct, lambda v: (fn(v),))
    missing = fn(pd.Series([pd.NA], dtype=values.dtype))  # what a missing value becomes
    filler = pd.concat([out, missing], ignore_index=True)
    result = filler.take(np.where(codes >= 0, codes, len(out))).reset_index(drop=True)
    result.index = values.index
    return result
