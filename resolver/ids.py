"""Identity keys: the 64-bit keys that name records, identifiers, persons and review items across
runs, and their text forms. A leaf (it imports only the hashing kernels and the value hashes), so
that state, outputs, the batch pipeline and sync all take the same definitions.

- member key: who a record or an identifier is across runs (`record_member_keys`; an identifier's
  is `normalize.hash_identifiers(type, value)`);
- person key: a person's smallest member key (`smallest_member_keys`), remixed when it clashes
  with a key issued before (`remix_key`), shown as "p" + 16 hex digits (`format_person_ids` for a
  column, `person_id` for one key: the same text);
- salted key: a member key keyed with the state's salt (`salted`), what erasure keeps;
- signed key: a uint64 key as the signed 64-bit integer SQL stores (`to_signed`);
- review item id: "i" + 12 hex digits of an order-free hash of a pair of member keys (`item_ids`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from resolver.kernels.hashing import mix64
from resolver.normalize import hash_identifiers

GOLDEN_GAMMA = np.uint64(0x9E3779B97F4A7C15)  # 2^64 / golden ratio: spreads small integers over 64 bits


def record_member_keys(records: pd.DataFrame) -> np.ndarray:
    """Per record (`source`, `source_key` columns): the hash of its source and key, who it is
    across runs (the member key of the state)."""
    out = np.zeros(len(records), dtype=np.uint64)
    for source, idx in records.groupby("source", sort=False, observed=True).indices.items():
        out[idx] = hash_identifiers(f"record:{source}", records["source_key"].iloc[idx].reset_index(drop=True))
    return out


def salted(keys: np.ndarray, salt: str) -> np.ndarray:
    """A keyed 64-bit mix of member keys: two splitmix64 rounds, each keyed by half of the salt."""
    keys = np.asarray(keys, dtype=np.uint64)
    first, second = np.uint64(int(salt[:16], 16)), np.uint64(int(salt[16:32], 16))
    h = keys
    for k in (first, second):
        h = mix64(h ^ k)
    return h


def to_signed(key: int) -> int:
    """A uint64 key as the signed 64-bit integer a database column holds."""
    return key - (1 << 64) if key >= (1 << 63) else key


def smallest_member_keys(labels: np.ndarray, member_keys: np.ndarray) -> np.ndarray:
    """Per component label, the smallest 64-bit member key in it: the component's person key.

    The key depends only on who is in the cluster, never on input order, so the same input gives
    the same ids. `member_keys` are per-node uint64 hashes of a stable member name
    (source + record key, or identifier type + value).
    """
    smallest = np.full(int(labels.max()) + 1 if len(labels) else 0, np.iinfo(np.uint64).max, dtype=np.uint64)
    np.minimum.at(smallest, labels, np.asarray(member_keys, dtype=np.uint64))
    return smallest


def remix_key(key: np.ndarray, attempt: int) -> np.ndarray:
    """The key a new person gets instead of `key` at the `attempt`-th clash with an issued one
    (the batch's carried ids and serve's new persons alike)."""
    with np.errstate(over="ignore"):
        return mix64(key ^ (np.uint64(attempt) * GOLDEN_GAMMA))


# Two hex digits per byte value, as one uint16 each: a byte's digits are one 1-D lookup.
_HEX = np.frombuffer(b"".join(f"{i:02x}".encode() for i in range(256)), dtype=np.uint16)


def format_person_ids(keys: np.ndarray, missing: np.ndarray | None = None) -> pd.Series:
    """Person keys as text ids: "p" + 16 hex digits (vectorized; NA where `missing`)."""
    keys = np.ascontiguousarray(np.asarray(keys, dtype=">u8"))
    n = len(keys)
    chars = np.empty((n, 17), dtype=np.uint8)
    chars[:, 0] = ord("p")
    chars[:, 1:] = _HEX[keys.view(np.uint8)].view(np.uint8).reshape(n, 16)
    offsets = np.arange(0, 17 * (n + 1), 17, dtype=np.int64)
    validity = None if missing is None else pa.array(~np.asarray(missing, dtype=bool)).buffers()[1]
    # large_string, the type of the "str" dtype: the column is made from these buffers, not copied
    arr = pa.Array.from_buffers(pa.large_string(), n, [validity, pa.py_buffer(offsets), pa.py_buffer(chars)])
    return pd.Series(arr, dtype="str")


def person_id(key: int) -> str:
    """One person key as `format_person_ids` writes it, without building a column for one value."""
    return f"p{key:016x}"


def person_ids(labels: np.ndarray, member_keys: np.ndarray) -> pd.Series:
    """Text person id per node (see smallest_member_keys)."""
    return format_person_ids(smallest_member_keys(labels, member_keys)[labels])


def person_key(person: str) -> int:
    """The key of a text person id (the inverse of `person_id`)."""
    return int(person[1:], 16)


def item_ids(key_a: np.ndarray, key_b: np.ndarray) -> np.ndarray:
    """A stable id per pair of records (order-free): "i" + 12 hex digits of a hash of both member keys."""
    a, b = np.asarray(key_a, dtype=np.uint64), np.asarray(key_b, dtype=np.uint64)
    with np.errstate(over="ignore"):
        h = mix64(np.minimum(a, b) * GOLDEN_GAMMA + mix64(np.maximum(a, b)))
    return np.array([f"i{int(x) >> 16:012x}" for x in h], dtype=object)
