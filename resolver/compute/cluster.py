"""Identity clusters: connected components over accepted edges (the person ids they get are in resolver/ids.py)."""

from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components as _scipy_cc

from resolver.compute.backend import CPU, Backend, to_host
from resolver.compute.components import connected_components as xp_components
from resolver.compute.components import cugraph_components


def connected_components(n_nodes: int, src: np.ndarray, dst: np.ndarray, backend: Backend = CPU) -> np.ndarray:
    """Component label per node (0..k-1, numbered by each component's smallest node) of the
    undirected graph given by the edge arrays; the backend picks the engine, the labels are equal."""
    if backend.components == "dask":
        from resolver.compute import dask_engine

        return dask_engine.connected_components(n_nodes, src, dst, dask_engine.active())
    if backend.components != "scipy":
        return _device_components(n_nodes, src, dst, backend)
    if n_nodes == 0:
        return np.zeros(0, dtype=np.int64)
    src = np.asarray(src, dtype=np.int64)
    dst = np.asarray(dst, dtype=np.int64)
    adjacency = coo_matrix(
        (np.ones(len(src), dtype=np.int8), (src, dst)), shape=(n_nodes, n_nodes)
    ).tocsr()
    _, labels = _scipy_cc(adjacency, directed=True, connection="weak")
    return labels.astype(np.int64)


def _device_components(n_nodes: int, src, dst, backend: Backend) -> np.ndarray:
    xp = backend.xp
    src, dst = xp.asarray(src, dtype=xp.int64), xp.asarray(dst, dtype=xp.int64)
    if backend.components == "cugraph":
        labels = cugraph_components(n_nodes, src, dst)
    else:
        labels = xp_components(n_nodes, src, dst, xp)
    return to_host(labels).astype(np.int64)
