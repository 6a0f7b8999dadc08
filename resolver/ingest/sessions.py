"""Sessions of anonymous ids, built at ingest per file (per-event rows never outlive this step):
each anonymous id's events split where the inactivity gap exceeds `session_gap_minutes`, with the
session's first IP, user agent, screen, city and country and a MinHash signature of its visited
pages. Anonymous visitor stitching (resolver/persons/stitching.py) reads them after the persons
are resolved."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from resolver.compute.backend import to_host
from resolver.kernels import minhash
from resolver.kernels.hashing import hash_strings, mix64


def _text_hash(values: pd.Series, prefix: bytes) -> np.ndarray:
    text = values.astype("str").fillna("")
    hashed = hash_strings(pa.array(text.array, type=pa.large_string()), prefix=prefix)
    return np.where(text.to_numpy(dtype=object) == "", np.uint64(0), hashed).astype(np.uint64)


def page_path(urls: pd.Series) -> pd.Series:
    """A URL's path, lower case, without query, fragment or trailing slash ("/" for the home page)."""
    text = urls.astype("str").str.strip().str.lower()
    path = text.str.replace(r"^[a-z][a-z0-9+.-]*://[^/]*", "", regex=True).str.replace(r"[?#].*$", "", regex=True)
    path = path.str.rstrip("/")
    return path.where(path != "", "/").where(text.notna())


def minhash_rows(page_hash: np.ndarray, permutations: int) -> np.ndarray:
    """(n, permutations) uint32 hashes of each page under each permutation (max for no page): the
    numpy definition that the compiled kernel (resolver/kernels/minhash.py) is tested against."""
    out = np.empty((len(page_hash), permutations), dtype=np.uint32)
    for i, seed in enumerate(minhash.seeds(permutations)):
        with np.errstate(over="ignore"):
            out[:, i] = (mix64(page_hash ^ seed) >> np.uint64(32)).astype(np.uint32)
    out[page_hash == 0] = np.iinfo(np.uint32).max
    return out


def sessionize(anon_hash: np.ndarray, anon_type: np.ndarray, times: np.ndarray, fields: dict[str, pd.Series],
               gap_minutes: float, permutations: int, target: str = "cpu", xp=np) -> pd.DataFrame:
    """One row per session of each anonymous id (events with a time only): anon_hash, anon_type,
    start, end (int64 ns), events, the session's first ip, user_agent, screen, city and country,
    and mh0.. (the MinHash signature of its pages, by the kernel built for `target`)."""
    ts = times.astype("datetime64[ns]").view(np.int64)
    rows = np.flatnonzero((anon_hash != 0) & (ts != np.iinfo(np.int64).min))
    rows = rows[np.lexsort((ts[rows], anon_hash[rows]))]
    a, t = anon_hash[rows], ts[rows]
    new = np.ones(len(rows), dtype=bool)
    new[1:] = (a[1:] != a[:-1]) | (t[1:] - t[:-1] > int(gap_minutes * 60 * 10**9))
    starts = np.flatnonzero(new)
    session = np.cumsum(new) - 1
    frame = pd.DataFrame({
        "anon_hash": a[starts], "anon_type": anon_type[rows][starts].astype(np.int16), "start": t[starts],
        "end": np.maximum.reduceat(t, starts) if len(starts) else t[:0],
        "events": np.diff(np.append(starts, len(rows))).astype(np.int64),
    })
    by_session = pd.Series(session)
    for name in ("ip", "user_agent", "screen", "city", "country"):
        values = fields.get(name)
        if values is None:
            frame[name] = pd.Series([None] * len(starts), dtype="str")
            continue
        picked = values.iloc[rows].reset_index(drop=True).astype("str")
        frame[name] = picked.groupby(by_session).first().reindex(range(len(starts))).reset_index(drop=True)
    pages = fields.get("page")
    page_hash = _text_hash(page_path(pages.iloc[rows].reset_index(drop=True)), b"page:") if pages is not None \
        else np.zeros(len(rows), dtype=np.uint64)
    offsets = np.append(starts, len(rows)).astype(np.int64)
    sig = to_host(minhash.signatures(page_hash, offsets, permutations, target=target, xp=xp))
    for i in range(permutations):
        frame[f"mh{i}"] = sig[:, i]
    return frame
