"""Distinct values by hash tables (compute/grouping.py) give exactly numpy's sort-based answers."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from resolver.compute.grouping import (
    positions_in,
    repeated_in_groups,
    sorted_unique,
    unique_with_index,
    unique_with_index_inverse,
)

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
    for mostly_distinct in (False, True):
        got = unique_with_index_inverse(values, mostly_distinct)
        for got_part, want in zip(got, (distinct, first, inverse.reshape(-1))):
            assert got_part.tolist() == want.tolist()
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


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 6), st.integers(0, 200), st.integers(0, 2**32 - 1))
def test_repeats_in_groups_are_pandas_duplicates(n_groups, rows, seed):
    import pandas as pd

    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"group": rng.integers(0, n_groups, rows), "a": rng.integers(0, 3, rows).astype(np.uint64),
                          "b": rng.integers(0, 2, rows).astype(np.int16)})
    got = repeated_in_groups(frame["group"].to_numpy(), frame["a"].to_numpy(), frame["b"].to_numpy(), n_groups)
    assert got.tolist() == frame.duplicated(["group", "a", "b"], keep="first").tolist()


@settings(max_examples=30, deadline=None)
@given(st.integers(33, 3000), st.integers(1, 50), st.integers(0, 2**32 - 1))
def test_repeats_in_a_big_group_are_found_by_sorting_and_equal_pandas(rows, distinct, seed):
    """A group over _SMALL_GROUP rows (one record with thousands of identifiers) takes the sorted
    path: the answer is the pairwise one's, without its quadratic time."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"group": rng.integers(0, 2, rows) * 0 + rng.integers(0, 2, rows),
                          "a": rng.integers(0, distinct, rows).astype(np.uint64),
                          "b": rng.integers(0, 3, rows).astype(np.uint64)})
    got = repeated_in_groups(frame["group"].to_numpy(), frame["a"].to_numpy(), frame["b"].to_numpy(), 2)
    assert got.tolist() == frame.duplicated(["group", "a", "b"], keep="first").tolist()
