"""Identity clusters: connected components over accepted edges (the person ids they get are in resolver/ids.py)."""

from __future__ import annotations

import numpy as np
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
