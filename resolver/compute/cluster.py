"""Identity clusters: connected components over accepted edges (the person ids they get are in resolver/ids.py)."""

from __future__ import annotations

import numpy as np
from numba import njit
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


@njit(cache=True)
def find_root(parent: np.ndarray, node: int) -> int:
    """The root of a node in a union-find forest, halving the path on the way (also guards.py's)."""
    while parent[node] != node:
        parent[node] = parent[parent[node]]  # path halving
        node = parent[node]
    return node


@njit(cache=True)
def _union_find_labels(n_nodes: int, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Union-find whose root is always its tree's smallest node, so numbering roots in node order
    gives scipy's labels (components in the order of their smallest node)."""
    parent = np.arange(n_nodes)
    for e in range(len(src)):
        a, b = find_root(parent, src[e]), find_root(parent, dst[e])
        if a < b:
            parent[b] = a
        elif b < a:
            parent[a] = b
    labels = np.empty(n_nodes, dtype=np.int64)
    k = 0
    for node in range(n_nodes):
        root = find_root(parent, node)
        if root == node:
            labels[node] = k
            k += 1
        else:
            labels[node] = labels[root]  # root < node: labelled already
    return labels


def _scipy_components(n_nodes: int, src, dst, backend: Backend, engine: Engine) -> np.ndarray:
    """The host's components: a compiled union-find, where scipy's csgraph would first convert the
    edge list to CSR twice (most of its time on millions of edges); the labels are scipy's."""
    if n_nodes == 0:
        return np.zeros(0, dtype=np.int64)
    return _union_find_labels(n_nodes, np.asarray(src, dtype=np.int64), np.asarray(dst, dtype=np.int64))


def _csgraph_components(n_nodes: int, src, dst) -> np.ndarray:
    """scipy.sparse.csgraph's weak components: the reference _scipy_components must equal (tests)."""
    if n_nodes == 0:
        return np.zeros(0, dtype=np.int64)
    adjacency = coo_matrix(
        (np.ones(len(src), dtype=np.int8), (np.asarray(src, dtype=np.int64), np.asarray(dst, dtype=np.int64))),
        shape=(n_nodes, n_nodes),
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
    """On the cluster; with a GPU backend each worker holds its edges on its own GPU."""
    arrays = backend.xp.__name__ if backend.on_gpu_path else "numpy"
    return dask_engine.connected_components(n_nodes, to_host(src), to_host(dst), engine, arrays)


# The implementations compute/dispatch.py chooses among, by name.
COMPONENTS = {"scipy": _scipy_components, "cugraph": _cugraph_components, "xp": _xp_components,
              "dask": _dask_components}
