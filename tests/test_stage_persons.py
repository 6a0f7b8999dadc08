"""Stage 4, persons: person ids as text, and golden records by survivorship on three conflicting
records (plus a one-record person). Expected values are worked out by hand from the literal rows.
"""

import numpy as np
import pandas as pd
import pytest

from resolver.config import Config
from resolver.persons.golden import build_golden
from resolver import ids

ATTRIBUTES = {"first_name": "F", "email": "E", "city": "C"}
CONFIG = {
    "identity": {"types": {}},
    "sources": [  # crm is the more trusted source (lower trust ranks first)
        {"name": "crm", "format": "csv", "path": "c.csv", "key": "Id", "trust": 1, "attributes": ATTRIBUTES},
        {"name": "web", "format": "csv", "path": "w.csv", "key": "Id", "trust": 2, "attributes": ATTRIBUTES},
    ],
    # first_name: the default chain (source_priority, most_recent, most_frequent)
    "golden": {"fields": {"email": ["most_recent"], "city": ["most_frequent", "longest"]}},
}

# p1: three records that disagree on every field; p2: one record
RECORDS = pd.DataFrame({
    "record_id": [0, 1, 2, 3],
    "source": ["crm", "web", "web", "web"],
    "record_key": ["c1", "w1", "w2", "w3"],
    "timestamp": pd.to_datetime(["2024-01-01", "2024-06-01", "2023-01-01", "2024-01-01"]),
    "is_deleted": False,
    "first_name": pd.Series(["Robert", "Bob", "Mary", "Cy"], dtype="str"),
    "email": pd.Series(["Rob@Acme.io", "bob.s@gmail.com", None, "cy@acme.io"], dtype="str"),
    "city": pd.Series(["Chicago", "chicago ", "Evanston", "Peoria"], dtype="str"),
})
PERSON = ["p1", "p1", "p1", "p2"]


@pytest.fixture(scope="module")
def golden():
    config = Config.model_validate(CONFIG)
    return build_golden(RECORDS, pd.Series(PERSON, dtype="str"), pd.Series(["p1", "p2"], dtype="str"), config)


def field(golden, name: str, person: int) -> tuple:
    row = golden.golden_records.iloc[person]
    return row[name], row[f"{name}__source"], row[f"{name}__record_key"], row[f"{name}__rule"]


def test_source_priority_picks_the_crm_first_name(golden):
    assert field(golden, "first_name", 0) == ("Robert", "crm", "c1", "source_priority")


def test_most_recent_picks_the_june_email_in_normalized_form(golden):
    # bob.s@gmail.com shows as matching compares it: gmail dots folded
    assert field(golden, "email", 0) == ("bobs@gmail.com", "web", "w1", "most_recent")
    assert golden.golden_records["email__timestamp"][0] == pd.Timestamp("2024-06-01")


def test_most_frequent_counts_values_in_match_form_and_shows_the_first_records_text(golden):
    # "Chicago" and "chicago " are one value held twice; "longest" ties; crm's record is first
    assert field(golden, "city", 0) == ("Chicago", "crm", "c1", "most_frequent")


def test_a_one_record_person_agrees_with_itself(golden):
    assert field(golden, "first_name", 1) == ("Cy", "web", "w3", "agreement")
    assert field(golden, "city", 1) == ("Peoria", "web", "w3", "agreement")
    assert golden.golden_records["conflicting_fields"].tolist() == [3, 0]


def test_conflicts_list_each_distinct_value_with_its_records(golden):
    table = golden.conflicts[["person_id", "field", "value", "records", "sources", "chosen", "rule"]]
    assert table.values.tolist() == [
        ["p1", "first_name", "Robert", 1, "crm", True, "source_priority"],
        ["p1", "first_name", "Bob", 1, "web", False, "source_priority"],
        ["p1", "first_name", "Mary", 1, "web", False, "source_priority"],
        ["p1", "email", "rob@acme.io", 1, "crm", False, "most_recent"],
        ["p1", "email", "bobs@gmail.com", 1, "web", True, "most_recent"],
        ["p1", "city", "Chicago", 2, "crm,web", True, "most_frequent"],
        ["p1", "city", "Evanston", 1, "web", False, "most_frequent"],
    ]


def test_a_name_unlike_the_chosen_one_flags_the_person_for_review(golden):
    names = golden.conflicts[golden.conflicts["field"] == "first_name"]
    # Bob is a nickname of Robert (1.0); Mary: Jaro 1 of 6 and 4 letters match -> (1/6 + 1/4 + 1) / 3
    assert names["similarity_to_chosen"].tolist() == pytest.approx([1.0, 1.0, 17 / 36])
    assert golden.golden_records["needs_review"].tolist() == [True, False]
    assert golden.summary["persons_flagged_for_review"] == 1
    assert golden.summary["fields"]["city"] == {"persons_with_value": 2, "conflicts": 1}


def person_ids(labels, member_keys):
    return ids.person_ids(np.asarray(labels), np.asarray(member_keys, dtype=np.uint64)).tolist()


def format_person_ids(keys, missing=None):
    return ids.format_person_ids(np.asarray(keys, dtype=np.uint64), missing).tolist()


def test_person_ids_are_p_and_sixteen_hex_digits_of_the_smallest_member_key():
    assert format_person_ids([0x0123456789ABCDEF, 0, 2**64 - 1]) == ["p0123456789abcdef", "p0000000000000000",
                                                                    "pffffffffffffffff"]
    ids = format_person_ids([10, 11], missing=np.array([False, True]))
    assert ids[0] == "p000000000000000a" and pd.isna(ids[1])
    # nodes 0 and 1 are one person: the smaller key (3) names both, whatever the node order
    assert person_ids([0, 0, 1], [9, 3, 255]) == ["p0000000000000003", "p0000000000000003", "p00000000000000ff"]
    assert person_ids([1, 0, 0], [255, 3, 9]) == ["p00000000000000ff", "p0000000000000003", "p0000000000000003"]
