"""Identity clusters: connected components over accepted edges, and deterministic person ids."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components as _scipy_cc

from resolver.compute import dask_engine
from resolver.compute.backend import CPU, Backend, to_host
from resolver.compute.components import connected_components as xp_components
from resolver.compute.components import cugraph_components
from resolver.compute.dispatch import choose
from resolver.compute.engine import LOCAL, Engine


def connected_components(n_nodes: int, src: np.ndarray, dst: np.ndarray, backend: Backend = CPU,
                         engine: Engine = LOCAL) -> np.ndarray:
    """Component label per node (0..k-1, numbered by each component's smallest node) of the
    undirected graph given by the edge arrays; the engine and the backend pick the implementation
    (compute/dispatch.py), the labels are equal."""
    return COMPONENTS[choose("components", backend, engine)](n_nodes, src, dst, backend, engine)


def _scipy_components(n_nodes: int, src, dst, backend: Backend, engine: Engine) -> np.ndarray:
    if n_nodes == 0:
        return np.zeros(0, dtype=np.int64)
    src = np.asarray(src, dtype=np.int64)
    dst = np.asarray(dst, dtype=np.int64)
    adjacency = coo_matrix(
        (np.ones(len(src), dtype=np.int8), (src, dst)), shape=(n_nodes, n_nodes)
    ).tocsr()
    _, labels = _scipy_cc(adjacency, directed=True, connection="weak")
    return labels.astype(np.int64)


def _cugraph_components(n_nodes: int, src, dst, backend: Backend, engine: Engine) -> np.ndarray:
    xp = backend.xp
    labels = cugraph_components(n_nodes, xp.asarray(src, dtype=xp.int64), xp.asarray(dst, dtype=xp.int64))
    return to_host(labels).astype(np.int64)


def _xp_components(n_nodes: int, src, dst, backend: Backend, engine: Engine) -> np.ndarray:
    xp = backend.xp
    labels = xp_components(n_nodes, xp.asarray(src, dtype=xp.int64), xp.asarray(dst, dtype=xp.int64), xp)
    return to_host(labels).astype(np.int64)


def _dask_components(n_nodes: int, src, dst, backend: Backend, engine: Engine) -> np.ndarray:
    return dask_engine.connected_components(n_nodes, src, dst, engine)


# The implementations compute/dispatch.py chooses among, by name.
COMPONENTS = {"scipy": _scipy_components, "cugraph": _cugraph_components, "xp": _xp_components,
              "dask": _dask_components}


def smallest_member_keys(labels: np.ndarray, member_keys: np.ndarray) -> np.ndarray:
    """Per component label, the smallest 64-bit member key in it: the component's person key.

    The key depends only on who is in the cluster, never on input order, so the same input gives
    the same ids. `member_keys` are per-node uint64 hashes of a stable member name
    (source + record key, or identifier type + value).
    """
    smallest = np.full(int(labels.max()) + 1 if len(labels) else 0, np.iinfo(np.uint64).max, dtype=np.uint64)
    np.minimum.at(smallest, labels, np.asarray(member_keys, dtype=np.uint64))
    return smallest


_HEX = np.frombuffer(b"".join(f"{i:02x}".encode() for i in range(256)), dtype=np.uint8).reshape(256, 2)


def format_person_ids(keys: np.ndarray, missing: np.ndarray | None = None) -> pd.Series:
    """Person keys as text ids: "p" + 16 hex digits (vectorized; NA where `missing`)."""
    keys = np.ascontiguousarray(np.asarray(keys, dtype=">u8"))
    n = len(keys)
    chars = np.empty((n, 17), dtype=np.uint8)
    chars[:, 0] = ord("p")
    chars[:, 1:] = _HEX[keys.view(np.uint8).reshape(n, 8)].reshape(n, 16)
    offsets = np.arange(0, 17 * (n + 1), 17, dtype=np.int32)
    validity = None if missing is None else pa.array(~np.asarray(missing, dtype=bool)).buffers()[1]
    arr = pa.Array.from_buffers(pa.string(), n, [validity, pa.py_buffer(offsets), pa.py_buffer(chars.tobytes())])
    return pd.Series(arr, dtype="str")


def person_ids(labels: np.ndarray, member_keys: np.ndarray) -> pd.Series:
    """Text person id per node (see smallest_member_keys)."""
    return format_person_ids(smallest_member_keys(labels, member_keys)[labels])
