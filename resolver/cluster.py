"""Identity clusters: connected components over accepted edges, and deterministic person ids."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components as _scipy_cc


def connected_components(n_nodes: int, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Component label per node (0..k-1) of the undirected graph given by the edge arrays."""
    if n_nodes == 0:
        return np.zeros(0, dtype=np.int64)
    src = np.asarray(src, dtype=np.int64)
    dst = np.asarray(dst, dtype=np.int64)
    adjacency = coo_matrix(
        (np.ones(len(src), dtype=np.int8), (src, dst)), shape=(n_nodes, n_nodes)
    ).tocsr()
    _, labels = _scipy_cc(adjacency, directed=True, connection="weak")
    return labels.astype(np.int64)


def person_ids(labels: np.ndarray, member_keys: np.ndarray) -> np.ndarray:
    """A stable id per component: the smallest 64-bit member key in it, as 16 hex digits.

    The id depends only on who is in the cluster, never on input order, so the same input gives
    the same ids. `member_keys` are per-node uint64 hashes of a stable member name
    (source + record key, or identifier type + value).
    """
    if len(labels) == 0:
        return np.array([], dtype=object)
    smallest = pd.Series(member_keys, dtype="uint64").groupby(labels).min()
    ids = format_person_ids(smallest.to_numpy())
    return ids[pd.Index(smallest.index).get_indexer(labels)]


def format_person_ids(keys: np.ndarray) -> np.ndarray:
    return np.array([f"p{k:016x}" for k in np.asarray(keys, dtype=np.uint64).tolist()], dtype=object)
