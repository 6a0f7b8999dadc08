"""Connected components over an edge list with any array module: min-label hooking with pointer
jumping (the FastSV family), so one implementation runs on numpy and on CuPy.

Invariant: parent[x] <= x, so the parent forest never has a cycle and every tree's root is the
smallest node of its component. Each round hooks the root of every edge's larger end under the
smaller label, then jumps pointers until every node points at its root; rounds stop when no edge
crosses two trees. Labels are then numbered by their smallest node, which is exactly how
scipy.sparse.csgraph numbers components, so both backends give identical labels.
"""

from __future__ import annotations

from types import ModuleType

import numpy as np

from resolver.compute.backend import scatter_min


def _jump_to_roots(xp: ModuleType, parent):
    while True:
        grand = parent[parent]
        if bool((grand == parent).all()):
            return parent
        parent = grand


def connected_components(n_nodes: int, src, dst, xp: ModuleType = np):
    """Component label (0..k-1, ordered by each component's smallest node) per node, as int64.

    Node ids are held as int32 while they fit (half the device memory: 1e9 edges fit an 80 GB GPU)."""
    index = node_index_dtype(n_nodes)
    parent = xp.arange(n_nodes, dtype=index)
    if n_nodes == 0:
        return parent.astype(xp.int64)
    src = xp.asarray(src, dtype=index)
    dst = xp.asarray(dst, dtype=index)
    while True:
        root_a, root_b = parent[src], parent[dst]
        crossing = root_a != root_b
        if not bool(crossing.any()):
            break
        root_a, root_b = root_a[crossing], root_b[crossing]
        low = xp.minimum(root_a, root_b)
        high = xp.maximum(root_a, root_b)
        del root_a, root_b
        scatter_min(xp, parent, high, low)  # hook each larger root under the smaller label
        del low, high
        parent = _jump_to_roots(xp, parent)
        src, dst = src[crossing], dst[crossing]  # edges already inside one tree stay there
        del crossing
    is_root = parent == xp.arange(n_nodes, dtype=index)
    dense = xp.cumsum(is_root, dtype=xp.int64) - 1
    return dense[parent]


def node_index_dtype(n_nodes: int):
    """int32 for node ids below 2^31, else int64 (never a silent wrap past 2^31)."""
    return np.int32 if n_nodes < 2**31 else np.int64


def numbered_by_smallest_node(xp: ModuleType, labels):
    """Relabel any component labelling 0..k-1 in the order of each component's smallest node (how
    scipy numbers them), so every components engine gives identical labels."""
    n = len(labels)
    smallest = xp.full(int(labels.max()) + 1 if n else 0, n, dtype=xp.int64)
    scatter_min(xp, smallest, labels, xp.arange(n, dtype=xp.int64))
    first = smallest[labels]  # per node: the smallest node of its component
    is_first = xp.zeros(n, dtype=bool)
    is_first[first] = True
    return (xp.cumsum(is_first.astype(xp.int64)) - 1)[first]


def cugraph_components(n_nodes: int, src, dst):
    """Connected components by cuGraph's weakly_connected_components (cuGraph 26.x API):
    Graph(directed=False).from_cudf_edgelist, then a DataFrame of `vertex` and `labels`.
    Nodes without an edge are not in cuGraph's graph; each is its own component."""
    import cudf
    import cugraph
    import cupy

    labels = cupy.arange(n_nodes, dtype=cupy.int64) + n_nodes  # isolated nodes: a label of their own
    if len(src):
        edges = cudf.DataFrame({"src": cupy.asarray(src, dtype=cupy.int64), "dst": cupy.asarray(dst, dtype=cupy.int64)})
        graph = cugraph.Graph(directed=False)
        graph.from_cudf_edgelist(edges, source="src", destination="dst", renumber=True)
        found = cugraph.weakly_connected_components(graph)
        labels[found["vertex"].values.astype(cupy.int64)] = found["labels"].values.astype(cupy.int64)
    dense = cupy.unique(labels, return_inverse=True)[1].reshape(-1)
    return numbered_by_smallest_node(cupy, dense)
