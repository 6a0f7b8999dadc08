"""Distinct values by hash tables (compute/grouping.py) give exactly numpy's sort-based answers."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from resolver.compute.grouping import positions_in, sorted_unique, unique_with_index, unique_with_index_inverse

# Few distinct values (many repeats) and the full uint64 range (hash values), empty arrays included.
VALUES = st.one_of(
    arrays(np.uint64, st.integers(0, 300), elements=st.integers(0, 20)),
    arrays(np.uint64, st.integers(0, 300), elements=st.integers(0, 2**64 - 1)),
    arrays(np.int64, st.integers(0, 300), elements=st.integers(-(2**63), 2**63 - 1)),
)


@settings(max_examples=200, deadline=None)
@given(VALUES)
def test_the_hashed_uniques_are_numpys(values):
    distinct, first, inverse = np.unique(values, return_index=True, return_inverse=True)
    for got, want in zip(unique_with_index_inverse(values), (distinct, first, inverse.reshape(-1))):
        assert got.tolist() == want.tolist()
    assert sorted_unique(values).tolist() == distinct.tolist() and sorted_unique(values).dtype == values.dtype
    assert [x.tolist() for x in unique_with_index(values)] == [distinct.tolist(), first.tolist()]


@settings(max_examples=200, deadline=None)
@given(VALUES, st.data())
def test_positions_are_searchsorteds(values, data):
    distinct = np.unique(values)
    # mostly values of the table, sometimes others (where searchsorted says where they would go)
    extra = data.draw(arrays(values.dtype, st.integers(0, 5), elements=st.integers(0, 2**62)))
    lookups = np.concatenate([values[::-1], extra]).astype(values.dtype)
    assert positions_in(distinct, lookups).tolist() == np.searchsorted(distinct, lookups).tolist()
