"""Ingest details: timestamps, event anchors, collapsed edges, Arrow-free grouping helpers."""

import numpy as np
import pandas as pd
import pyarrow.compute as pc
import pytest

from resolver.compute.grouping import Groups
from resolver.ingest.tables import _anchors, _parse_times, spread


def test_timestamps_parse_zoned_iso_fast_and_anything_else_per_value():
    zoned = _parse_times(pd.Series(["2024-06-02T17:40:11.000Z", None, "2024-06-02T17:40:11+01:00"], dtype="str"), 3)
    assert zoned[0] == np.datetime64("2024-06-02T17:40:11")
    assert np.isnat(zoned[1])
    assert zoned[2] == np.datetime64("2024-06-02T16:40:11")
    mixed = _parse_times(pd.Series(["2024-06-02", "junk", None], dtype="str"), 3)
    assert mixed[0] == np.datetime64("2024-06-02T00:00:00")
    assert np.isnat(mixed[1]) and np.isnat(mixed[2])
    assert np.isnat(_parse_times(None, 2)).all()


def test_anchor_is_the_strongest_usable_identifier_of_each_event():
    # columns (strongest first): user_id, email, ip (not evidence), anonymous_id
    hashes = np.array([[0, 5, 9, 7], [3, 5, 9, 7], [0, 0, 9, 0]], dtype=np.uint64)
    usable = np.array([True, True, False, True])
    anchor, column = _anchors(hashes, usable)
    assert anchor.tolist() == [5, 3, 0]
    assert column.tolist() == [1, 0, -1]


def test_spread_maps_distinct_results_back_to_rows():
    out = spread(np.array([10, 20], dtype=np.uint64), np.array([1, -1, 0, 1]), np.uint64(0))
    assert out.tolist() == [20, 0, 10, 20]


def test_groups_reduce_like_pandas():
    keys = np.array([3, 1, 3, 2, 1, 3])
    values = np.array([1, 2, 3, 4, 5, 6])
    times = np.array(["2024-01-03", "NaT", "2024-01-01", "NaT", "2024-01-02", "2024-01-05"], dtype="datetime64[ns]")
    groups = Groups.of(keys)
    assert groups.keys.tolist() == [1, 2, 3]
    assert groups.sum(values).tolist() == [7, 4, 10]
    assert groups.first(values).tolist() == [2, 4, 1]
    earliest = groups.min_time(times)
    assert earliest[0] == np.datetime64("2024-01-02") and np.isnat(earliest[1]) and earliest[2] == np.datetime64("2024-01-01")
    latest = groups.max_time(times)
    assert latest[0] == np.datetime64("2024-01-02") and np.isnat(latest[1]) and latest[2] == np.datetime64("2024-01-05")
    expected = pd.Series(values).groupby(keys).sum()
    assert groups.sum(values).tolist() == expected.tolist()


def test_groups_tiebreak_orders_rows_within_a_group():
    groups = Groups.of(np.array([1, 1, 2]), tiebreak=np.array([1, 0, 0]))
    assert groups.first(np.array(["late", "early", "only"], dtype=object)).tolist() == ["early", "only"]


def test_groups_tiebreak_falls_back_when_keys_do_not_fit_one_integer():
    keys = np.array([2**62, 2**62, 1], dtype=np.uint64)
    groups = Groups.of(keys, tiebreak=np.array([5, -3, 0]))
    assert groups.keys.tolist() == [1, 2**62]
    assert groups.first(np.array([10, 20, 30])).tolist() == [30, 20]


@pytest.mark.parametrize("colliding", [False, True])
def test_duplicate_keys_are_pandas_duplicates_even_when_hashes_collide(monkeypatch, colliding):
    """Record keys found duplicated by their hashes, the strings deciding: with a hash that maps
    many keys to one value (here: the key's length) the answer is still pandas' own."""
    from resolver.ingest import tables

    if colliding:
        monkeypatch.setattr(tables, "hash_strings",
                            lambda values: pc.fill_null(pc.utf8_length(values), 0).to_numpy().astype(np.uint64))
    rng = np.random.default_rng(3)
    keys = pd.Series(rng.choice(["a1", "b2", "c3", "dd4", "e", None, "ff5"], size=300), dtype="str")
    want = keys.duplicated(keep="first").to_numpy() & keys.notna().to_numpy()
    assert tables._duplicated(keys).tolist() == want.tolist() and want.sum() > 200
