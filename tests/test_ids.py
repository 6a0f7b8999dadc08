"""Identity keys (resolver/ids.py) on literal values: one definition for the batch and sync."""

import numpy as np
import pandas as pd

from resolver.ids import (
    format_person_ids,
    item_ids,
    person_id,
    person_ids,
    person_key,
    record_member_keys,
    remix_key,
    salted,
    smallest_member_keys,
    to_signed,
)
from resolver.persons.golden import UNKNOWN_TIME, most_recent_rank, source_priority_rank


def test_one_person_id_is_the_column_form():
    keys = np.array([0, 1, 0xDEADBEEF, (1 << 64) - 1], dtype=np.uint64)
    column = format_person_ids(keys)
    assert list(column) == [person_id(int(k)) for k in keys] == [
        "p0000000000000000", "p0000000000000001", "p00000000deadbeef", "pffffffffffffffff"]
    assert [person_key(p) for p in column] == [int(k) for k in keys]
    assert format_person_ids(keys, missing=np.array([False, True, False, False])).isna().tolist() == [
        False, True, False, False]


def test_a_person_is_named_by_its_smallest_member_key():
    labels = np.array([0, 1, 0, 1])
    members = np.array([9, 4, 3, 7], dtype=np.uint64)
    assert smallest_member_keys(labels, members).tolist() == [3, 4]
    assert list(person_ids(labels, members)) == [person_id(3), person_id(4), person_id(3), person_id(4)]


def test_signed_keys_keep_every_bit():
    for key in (0, 1, (1 << 63) - 1, 1 << 63, (1 << 64) - 1):
        signed = to_signed(key)
        assert -(1 << 63) <= signed < (1 << 63) and signed % (1 << 64) == key


def test_review_item_ids_are_order_free_and_salted_keys_depend_on_the_salt():
    a, b = np.array([5, 11], dtype=np.uint64), np.array([11, 5], dtype=np.uint64)
    ids = item_ids(a, b)
    assert ids[0] == ids[1] and ids[0].startswith("i") and len(ids[0]) == 13
    keys = np.array([1, 2, 3], dtype=np.uint64)
    assert not np.array_equal(salted(keys, "0" * 31 + "1"), salted(keys, "0" * 31 + "2"))
    assert np.array_equal(salted(keys, "ab" * 16), salted(keys, "ab" * 16))


def test_record_member_keys_name_source_and_key():
    records = pd.DataFrame({"source": ["crm", "crm", "web"], "source_key": ["1", "2", "1"]})
    keys = record_member_keys(records)
    assert len(set(keys.tolist())) == 3  # the same key in two sources is two records
    assert record_member_keys(records.iloc[[2, 0]].reset_index(drop=True)).tolist() == [keys[2], keys[0]]


def test_survivorship_rank_keys_rank_one_value_as_they_rank_a_column():
    times = np.array([10, 30, UNKNOWN_TIME, 20], dtype=np.int64)
    column = most_recent_rank(times)
    assert [int(most_recent_rank(t)) for t in times] == column.tolist()
    assert np.argsort(column, kind="stable").tolist() == [1, 3, 0, 2]  # newest first, unknown last
    assert source_priority_rank(np.array([2, 0, 1])).tolist() == [2, 0, 1]


def test_a_clashing_person_key_is_remixed_the_same_way_everywhere():
    keys = np.array([7, 7, 8], dtype=np.uint64)
    first, second = remix_key(keys, 1), remix_key(keys, 2)
    assert first[0] == first[1] != first[2] and not np.isin(first, keys).any()
    assert not np.array_equal(first, second)
    assert int(remix_key(np.array([7], dtype=np.uint64), 1)[0]) == int(first[0])  # one key as a column of one
