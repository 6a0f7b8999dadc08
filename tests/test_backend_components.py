"""The array-module connected components equal scipy's, label for label (run here with numpy)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resolver.compute.backend import BackendUnavailable, array_module
from resolver.compute.components import connected_components
from resolver.compute.cluster import _csgraph_components
from resolver.compute.cluster import connected_components as scipy_components

# (node count, edges between those nodes), empty graphs included
GRAPHS = st.integers(0, 60).flatmap(
    lambda n: st.tuples(st.just(n), st.lists(st.tuples(st.integers(0, max(n - 1, 0)), st.integers(0, max(n - 1, 0))),
                                             max_size=0 if n == 0 else 120)))


def _edge_arrays(graph):
    n, edges = graph
    return n, np.array([a for a, _ in edges], dtype=np.int64), np.array([b for _, b in edges], dtype=np.int64)


@settings(max_examples=200, deadline=None)
@given(GRAPHS)
def test_labels_equal_scipy_on_random_graphs(graph):
    n, src, dst = _edge_arrays(graph)
    assert connected_components(n, src, dst).tolist() == scipy_components(n, src, dst).tolist()


def test_long_chains_and_stars_in_any_order():
    rng = np.random.default_rng(5)
    n = 50_000
    order = rng.permutation(n)
    chain_src, chain_dst = order[:-1], order[1:]  # one path through every node, in random order
    got = connected_components(n, chain_src, chain_dst)
    assert (got == 0).all()
    star = connected_components(n + 10, np.full(n - 1, n - 1), np.arange(n - 1))
    assert star.tolist() == scipy_components(n + 10, np.full(n - 1, n - 1), np.arange(n - 1)).tolist()
    edges = rng.integers(0, n, (2, 30_000))
    assert connected_components(n, *edges).tolist() == scipy_components(n, *edges).tolist()


def test_backend_selection_errors_are_one_line_and_say_what_is_missing():
    assert array_module("cpu") is np
    with pytest.raises(ValueError, match="unknown backend 'tpu'"):
        array_module("tpu")
    try:
        import cupy  # noqa: F401
    except ImportError:
        with pytest.raises(BackendUnavailable, match="needs CuPy"):
            array_module("gpu")


@settings(max_examples=200, deadline=None)
@given(GRAPHS)
def test_host_union_find_equals_scipy_csgraph(graph):
    n, src, dst = _edge_arrays(graph)
    assert scipy_components(n, src, dst).tolist() == _csgraph_components(n, src, dst).tolist()
