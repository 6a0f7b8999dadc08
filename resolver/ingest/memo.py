"""Normalization memo: raw value -> normalized form, per normalizer, carried from run to run in the
state so that an incremental run normalizes only values it has not seen before.

Normalizers are pure functions of the value (and of the configuration: a state's memo is used only
with the configuration digest it was made under), so a remembered result is exactly what normalizing
again would give. Entries are keyed by a 64-bit hash of the raw value (sorted, found by binary
search); the raw text itself is not kept. The memo a run hands on holds the distinct values that run saw, no more: values
that left the sources leave the memo with them. Erased values too: `resolver forget` drops the
memo, and a run hands on nothing that a part with suppressed (erased) data looked up.

The memo is an argument: the run hands its memo to each ingest job (a worker opens the state's
memo folder itself) and to golden records; the normalizing functions take it (`memoized`, None:
normalize everything).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from resolver.compute.grouping import unique_with_index
from resolver.kernels.hashing import hash_strings

# One memo is active per process at a time (a plain global, not a context variable: the stages
# normalize columns in thread pools, and threads do not inherit context variables).
def raw_value_keys(values: pd.Series) -> np.ndarray:
    """64-bit hashes of the raw values: the memo is keyed by them (raw text is never stored)."""
    return hash_strings(pa.array(values.astype("str").array, type=pa.large_string()), prefix=b"memo:")


@dataclass
class NormalizationMemo:
    """tables: name -> key (sorted), out0[, out1]. An ingest worker gets `folder` instead (the
    state's memo folder) and reads only the tables it uses."""

    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    folder: Path | None = None
    # This run's lookups per name: the keys it found (its table has their outputs) and the rows
    # it had to normalize (key and outputs).
    seen: dict[str, list[tuple[np.ndarray, pd.DataFrame]]] = field(default_factory=dict)
    hits: int = 0
    misses: int = 0

    def table(self, name: str) -> pd.DataFrame | None:
        if name not in self.tables and self.folder is not None:
            path = self.folder / f"{name.replace(':', '__')}.parquet"
            self.tables[name] = pd.read_parquet(path) if path.exists() else None
        return self.tables.get(name)

    def lookup(self, name: str, distinct: pd.Series, fn: Callable[[pd.Series], tuple]) -> tuple:
        """fn(distinct) (a tuple of Series aligned with `distinct`), computing only unseen values."""
        distinct = distinct.reset_index(drop=True)
        keys = raw_value_keys(distinct)
        table = self.table(name)
        hit = np.zeros(len(keys), dtype=bool)
        if table is None or not len(table) or not len(distinct):
            results = tuple(r.reset_index(drop=True) for r in fn(distinct))
            self.misses += len(distinct)
        else:
            stored = table["key"].to_numpy(np.uint64)
            at = np.minimum(np.searchsorted(stored, keys), len(stored) - 1)
            hit = stored[at] == keys
            self.hits += int(hit.sum())
            self.misses += int((~hit).sum())
            computed = fn(distinct[~hit].reset_index(drop=True)) if not hit.all() else None
            order = np.argsort(np.concatenate([np.flatnonzero(hit), np.flatnonzero(~hit)]), kind="stable")
            results = []
            for i in range(len(table.columns) - 1):
                known = table[f"out{i}"].take(at[hit]).reset_index(drop=True)
                if computed is None:
                    results.append(known)
                    continue
                fresh = computed[i].reset_index(drop=True)
                joined = pd.concat([known.astype(fresh.dtype), fresh], ignore_index=True)
                results.append(joined.take(order).reset_index(drop=True))
            results = tuple(results)
        fresh = np.flatnonzero(~hit)
        frame = pd.DataFrame({"key": keys[fresh], **{f"out{i}": r.take(fresh).reset_index(drop=True)
                                                     for i, r in enumerate(results)}})
        self.seen.setdefault(name, []).append((keys[hit], frame))
        return results

    def absorb(self, seen: dict[str, list[tuple[np.ndarray, pd.DataFrame]]], hits: int, misses: int) -> None:
        """Take in what an ingest worker looked up."""
        for name, frames in seen.items():
            self.seen.setdefault(name, []).extend(frames)
        self.hits += hits
        self.misses += misses

    def remember(self, name: str, keys: np.ndarray) -> None:
        """Keys of values normalized in an earlier run by a part this run loaded from the state: the
        memo handed on keeps them (where it still has them)."""
        self.seen.setdefault(name, []).append((keys, pd.DataFrame({"key": np.zeros(0, dtype=np.uint64)})))

    def handed_on(self) -> dict[str, pd.DataFrame]:
        """The memo for the next run: every distinct value this run looked up, once, sorted by key.

        The previous table's rows this run used are marked by binary search (the remembered keys
        of loaded parts come sorted, which makes that cheap) and merged, in key order, with the
        rows this run normalized; string columns are only ever gathered by position."""
        out = {}
        for name, lookups in self.seen.items():
            frames = [frame for _, frame in lookups if len(frame)]
            fresh = pd.concat(frames, ignore_index=True) if frames else None
            fresh_keys = np.zeros(0, dtype=np.uint64)
            if fresh is not None:
                fresh_keys, first = unique_with_index(fresh["key"].to_numpy(np.uint64))
                fresh = fresh.take(first).reset_index(drop=True)
            table = self.table(name)
            kept = None
            if table is not None and len(table):
                stored = table["key"].to_numpy(np.uint64)
                used = np.zeros(len(stored), dtype=bool)
                for keys in (k for k, _ in lookups if len(k)):
                    at = np.minimum(np.searchsorted(stored, keys), len(stored) - 1)
                    used[at[stored[at] == keys]] = True
                if len(fresh_keys):  # normalized again (not found before): the fresh row is the one kept
                    at = np.minimum(np.searchsorted(stored, fresh_keys), len(stored) - 1)
                    used[at[stored[at] == fresh_keys]] = False
                kept = table.take(np.flatnonzero(used)).reset_index(drop=True)
            merged = _merge_sorted(kept, fresh)
            if merged is not None:
                out[name] = merged
        return out

    def stats(self) -> dict:
        total = self.hits + self.misses
        return {"values_looked_up": total, "remembered": self.hits, "normalized": self.misses,
                "remembered_share": round(self.hits / total, 4) if total else 0.0}


def _merge_sorted(a: pd.DataFrame | None, b: pd.DataFrame | None) -> pd.DataFrame | None:
    """Two tables sorted by distinct `key`s (no key in both), merged in key order."""
    if a is None or not len(a):
        return b if b is not None else a
    if b is None or not len(b):
        return a
    a_keys, b_keys = a["key"].to_numpy(np.uint64), b["key"].to_numpy(np.uint64)
    b_at = np.searchsorted(a_keys, b_keys) + np.arange(len(b_keys))
    from_a = np.ones(len(a) + len(b), dtype=bool)
    from_a[b_at] = False
    order = np.empty(len(a) + len(b), dtype=np.int64)
    order[np.flatnonzero(from_a)] = np.arange(len(a))
    order[b_at] = len(a) + np.arange(len(b))
    return pd.concat([a, b], ignore_index=True).take(order).reset_index(drop=True)


def memoized(memo: NormalizationMemo | None, name: str, distinct: pd.Series,
             fn: Callable[[pd.Series], tuple]) -> tuple:
    """fn over distinct raw values, through `memo` when there is one."""
    if memo is None:
        return fn(distinct)
    return memo.lookup(name, distinct, fn)


def memoized_column(memo: NormalizationMemo | None, name: str, values: pd.Series,
                    fn: Callable[[pd.Series], pd.Series]) -> pd.Series:
    """fn over a whole column (with repeats), normalizing each distinct value once and remembering
    it in `memo` (None: fn over the column as it is)."""
    if memo is None:
        return fn(values)
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    distinct = pd.Series(uniques, dtype=values.dtype if len(uniques) else "str")
    (out,) = memoized(memo, name, distinct, lambda v: (fn(v),))
    missing = fn(pd.Series([pd.NA], dtype=values.dtype))  # what a missing value becomes
    filler = pd.concat([out, missing], ignore_index=True)
    result = filler.take(np.where(codes >= 0, codes, len(out))).reset_index(drop=True)
    result.index = values.index
    return result
