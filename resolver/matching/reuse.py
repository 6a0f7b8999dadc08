"""Incremental matching: what a run takes from the state, and the caches it hands on.

The state keeps every record's blocking keys by record hash (its member key and the fingerprint of
all its match attributes) and every candidate pair's levels by pair hash (both records' member
keys and fingerprints of the compared attributes). A record whose hash the state knows is not keyed
again, and a pair whose hash it knows is not compared again: the stored keys and levels are what
keying and comparing would give (same records, same values). Reuse is a filter before keying and
comparing, never another algorithm; `MatchCaches` is the one helper for both caches.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from resolver.compute.backend import to_host
from resolver.kernels.hashing import hash_strings, mix64


@dataclass
class Reuse:
    """What an incremental run takes from the state: the model, and the levels of pairs compared
    before (valid while both records' compared attributes are unchanged)."""

    model: dict | None
    pairs: pd.DataFrame | None  # pair_hash (sorted), level columns l0..
    keys: pd.DataFrame | None = None  # record_hash (sorted), blocking key columns k0.. (before caps)


def fingerprints(attributes: dict[str, pd.Series], columns: list[str]) -> np.ndarray:
    """Per record, a 64-bit hash of the named attributes (in match form)."""
    out = np.zeros(len(next(iter(attributes.values()))) if attributes else 0, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for column in columns:
            text = attributes[column].astype("str")
            hashed = hash_strings(pa.array(text.array, type=pa.large_string()), prefix=f"{column}=".encode())
            out = (out * np.uint64(0x100000001B3)) ^ hashed
    return out


def pair_hashes(left: np.ndarray, right: np.ndarray, member_keys: np.ndarray, prints: np.ndarray) -> np.ndarray:
    """One 64-bit hash per pair of records, of both records' member keys and attribute fingerprints
    (order-free): equal only when the same two records are compared on the same values."""
    with np.errstate(over="ignore"):
        a = mix64(member_keys[left] ^ (prints[left] * np.uint64(0x9E3779B97F4A7C15)))
        b = mix64(member_keys[right] ^ (prints[right] * np.uint64(0x9E3779B97F4A7C15)))
        return mix64(np.minimum(a, b) * np.uint64(0xC2B2AE3D27D4EB4F) + np.maximum(a, b))


def record_hashes(member_keys: np.ndarray, attributes: dict[str, pd.Series]) -> np.ndarray:
    """Who each record is and what it holds: its blocking keys follow from these."""
    with np.errstate(over="ignore"):
        return mix64(member_keys ^ (fingerprints(attributes, list(attributes)) * np.uint64(0x9E3779B97F4A7C15)))


def _reused_keys(stored: pd.DataFrame, hashes: np.ndarray, n_rules: int) -> tuple[np.ndarray, np.ndarray]:
    """Blocking keys of the records the state keyed before with the same attributes: a mask of
    those records, and (n_rules, n) keys (zero elsewhere)."""
    keys = np.zeros((n_rules, len(hashes)), dtype=np.uint64)
    known = np.zeros(len(hashes), dtype=bool)
    table = stored["record_hash"].to_numpy(np.uint64)
    if not len(table) or not len(hashes):
        return known, keys
    at = np.minimum(np.searchsorted(table, hashes), len(table) - 1)
    known = table[at] == hashes
    for r in range(n_rules):
        keys[r, known] = stored[f"k{r}"].to_numpy(np.uint64)[at[known]]
    return known, keys


def _reused_levels(stored_pairs: pd.DataFrame | None, current: np.ndarray,
                   n_comparisons: int) -> tuple[np.ndarray, np.ndarray]:
    """Levels of the candidate pairs the state compared before on the same values (`current`: the
    pairs' hashes; the state's pairs are sorted by hash), and which pairs those are."""
    levels = np.zeros((len(current), n_comparisons), dtype=np.int8)
    found = np.zeros(len(current), dtype=bool)
    if stored_pairs is None or not len(stored_pairs) or not len(current):
        return levels, found
    stored = stored_pairs["pair_hash"].to_numpy(np.uint64)
    stored_levels = stored_pairs[[f"l{k}" for k in range(n_comparisons)]].to_numpy(np.int8)
    by_hash = np.argsort(current, kind="stable")  # sorted queries: a cache-friendly binary search
    at = np.minimum(np.searchsorted(stored, current[by_hash]), len(stored) - 1)
    hit = stored[at] == current[by_hash]
    found[by_hash[hit]] = True
    levels[by_hash[hit]] = stored_levels[at[hit]]
    return levels, found


@dataclass
class MatchCaches:
    """The state's matching caches for one run: what it reuses (`reuse`, None on a first or full
    run) and what it hands on (every record's keys, every pair's levels), both found by hash. Without
    member keys (a run without a state) there is nothing to reuse or hand on."""

    reuse: Reuse | None = None
    member_keys: np.ndarray | None = None
    record_hashes: np.ndarray | None = None
    compared_prints: np.ndarray | None = None  # per record, the fingerprint of the compared attributes

    @classmethod
    def of(cls, reuse: Reuse | None, member_keys: np.ndarray | None, attributes: dict[str, pd.Series],
           compared: list[str]) -> MatchCaches:
        if member_keys is None:
            return cls(reuse)
        return cls(reuse, member_keys, record_hashes(member_keys, attributes), fingerprints(attributes, compared))

    @property
    def used(self) -> bool:
        """Whether the run has a state (whose caches keep every pair's hash and levels)."""
        return self.member_keys is not None or self.reuse is not None

    def known_keys(self, n_rules: int) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Which records the state keyed before, and their keys (None, None: key every record)."""
        if self.record_hashes is None or self.reuse is None or self.reuse.keys is None:
            return None, None
        return _reused_keys(self.reuse.keys, self.record_hashes, n_rules)

    def key_cache(self, raw_keys: list[np.ndarray]) -> pd.DataFrame | None:
        """Every record's blocking keys (before caps) by record hash, sorted, for the state."""
        if self.record_hashes is None:
            return None
        by_record = np.argsort(self.record_hashes, kind="stable")
        return pd.DataFrame({"record_hash": self.record_hashes[by_record],
                             **{f"k{r}": keys[by_record] for r, keys in enumerate(raw_keys)}})

    def pair_hashes(self, left, right) -> np.ndarray | None:
        """Per pair (record positions, on the host or a device), its hash; None without a state."""
        if self.member_keys is None:
            return None
        return pair_hashes(to_host(left), to_host(right), self.member_keys, self.compared_prints)

    def known_levels(self, hashes: np.ndarray | None, n_comparisons: int) -> tuple[np.ndarray, np.ndarray] | None:
        """The levels the state holds for these pairs and which pairs it holds (None: no reuse)."""
        if self.reuse is None:
            return None
        return _reused_levels(self.reuse.pairs, hashes, n_comparisons)

    @staticmethod
    def pair_cache(hashes: np.ndarray | None, levels: np.ndarray) -> pd.DataFrame | None:
        """Every candidate pair's levels by pair hash, sorted, for the state (None without one)."""
        if hashes is None:
            return None
        by_hash = np.argsort(hashes, kind="stable")
        levels = levels[by_hash]
        return pd.DataFrame({"pair_hash": hashes[by_hash], **{f"l{k}": levels[:, k] for k in range(levels.shape[1])}})
