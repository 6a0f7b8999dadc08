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

from resolver.backend.arrays import scatter_min


def _jump_to_roots(xp: ModuleType, parent):
    while True:
        grand = parent[parent]
        if bool((grand == parent).all()):
            return parent
        parent = grand


def connected_components(n_nodes: int, src, dst, xp: ModuleType = np):
    """Component label (0..k-1, ordered by each component's smallest node) per node."""
    parent = xp.arange(n_nodes, dtype=xp.int64)
    if n_nodes == 0:
        return parent
    src = xp.asarray(src, dtype=xp.int64)
    dst = xp.asarray(dst, dtype=xp.int64)
    while True:
        root_a, root_b = parent[src], parent[dst]
        crossing = root_a != root_b
        if not bool(crossing.any()):
            break
        root_a, root_b = root_a[crossing], root_b[crossing]
        low = xp.minimum(root_a, root_b)
        high = xp.maximum(root_a, root_b)
        scatter_min(xp, parent, high, low)  # hook each larger root under the smaller label
        parent = _jump_to_roots(xp, parent)
        src, dst = src[crossing], dst[crossing]  # edges already inside one tree stay there
    is_root = parent == xp.arange(n_nodes, dtype=xp.int64)
    dense = xp.cumsum(is_root.astype(xp.int64)) - 1
    return dense[parent]
