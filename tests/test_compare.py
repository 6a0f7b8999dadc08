"""Comparison levels: each method's levels on small real examples; missing values weigh nothing."""

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st
from rapidfuzz.distance import JaroWinkler

from resolver.matching.compare import (
    compare_levels,
    level_labels,
    nickname_index,
    nickname_neighbours,
    prepare,
    are_nicknames,
)
from resolver.config import ComparisonConfig


def _levels(config: dict, left_values, right_values) -> list[str]:
    c = ComparisonConfig(name="x", column="col", **config)
    values = pd.Series(list(left_values) + list(right_values), dtype="str" if c.method != "numeric" else "float64")
    n = len(left_values)
    p = prepare(c, {"col": values})
    left, right = np.arange(n), np.arange(n, 2 * n)
    return [p.labels[i] for i in compare_levels(p, left, right)]


def test_string_levels_follow_jaro_winkler_thresholds_and_nicknames():
    left = ["william", "william", "catherine", "jon", "maria", None]
    right = ["william", "bill", "katherine", "jonathan", "peter", "x"]
    got = _levels({"method": "jaro_winkler", "thresholds": [0.92, 0.8], "nicknames": True}, left, right)
    assert got == ["exact", "nickname", "jw>=0.92" if JaroWinkler.similarity("catherine", "katherine") >= 0.92
                   else "jw>=0.8", "nickname", "else", "null"]


def test_levenshtein_and_jaccard_levels():
    assert _levels({"method": "levenshtein", "thresholds": [0.8]}, ["smithe", "smith"], ["smith", "jones"]) == \
        ["lev>=0.8", "else"]
    tokens = _levels({"method": "jaccard", "thresholds": [0.6, 0.3]}, ["12 main st apt 4", "12 main st"],
                     ["12 main st", "99 oak rd"])
    assert tokens == ["jaccard>=0.6", "else"]  # 3 of 5 tokens shared; none shared
    grams = _levels({"method": "jaccard", "ngram": 2, "thresholds": [0.5]}, ["martha"], ["marta"])
    assert grams == ["jaccard>=0.5"]


def test_date_levels():
    got = _levels({"method": "date", "years": [1, 10]},
                  ["1980-03-04", "1980-03-04", "1980-03-04", "1980-03-04", "1980-03-04", "1980-03-04"],
                  ["1980-03-04", "1980-04-03", "1980-12-31", "1975-01-01", "1950-01-01", None])
    assert got == ["exact", "day/month swapped", "within 1 years", "within 10 years", "else", "null"]


def test_email_phone_numeric_and_geo_levels():
    assert _levels({"method": "email"}, ["a@x.com", "a@x.com", "a@x.com", "a@x.com"],
                   ["a@x.com", "a@y.com", "b@x.com", "b@y.com"]) == ["exact", "same local part", "same domain", "else"]
    assert _levels({"method": "phone", "digits": 7}, ["+14155550123", "+14155550123", "+14155550123"],
                   ["+14155550123", "+16505550123", "+14155559999"]) == ["exact", "same last 7 digits", "else"]
    assert _levels({"method": "numeric", "distances": [1, 5]}, [10.0, 10.0, 10.0, 10.0, np.nan],
                   [10.0, 10.5, 14.0, 20.0, 1.0]) == ["exact", "within 1", "within 5", "else", "null"]
    c = ComparisonConfig(name="where", column=["lat", "lon"], method="geo", distances=[1, 50])
    p = prepare(c, {"lat": pd.Series([51.5007, 51.5014, 48.8584, np.nan]),
                    "lon": pd.Series([-0.1246, -0.1419, 2.2945, 0.0])})
    # Big Ben - Buckingham Palace ~1.2 km; Big Ben - Eiffel Tower ~340 km
    assert [p.labels[i] for i in compare_levels(p, np.array([0, 0, 0, 0]), np.array([0, 1, 2, 3]))] == \
        ["within 1 km", "within 50 km", "else", "null"]


def test_labels_and_term_frequencies():
    c = ComparisonConfig(name="x", column="col", method="exact", tf_adjust=True)
    assert level_labels(c) == ["null", "exact", "else"]
    p = prepare(c, {"col": pd.Series(["smith", "smith", "smith", "zhou", None], dtype="str")})
    assert p.frequency[:4].tolist() == [0.75, 0.75, 0.75, 0.25] and np.isnan(p.frequency[4])


def test_nicknames_come_from_the_maintained_table_and_relate_short_forms_of_one_name():
    neighbours = nickname_neighbours()
    assert len(neighbours) > 2000  # the `nicknames` package's table, not a hand-kept list
    number, _ = nickname_index()
    pairs = [("bill", "william", True), ("bill", "robert", True), ("chris", "christopher", True),
             ("chris", "christine", True), ("bob", "rob", True),  # two short forms of robert
             ("william", "robert", False),  # both go by bill, which is shorter than either
             ("bill", "bill", False),  # equal names are the exact level's
             ("albert", "alfred", False), ("zebediah", "bill", False)]
    ids_a = np.array([number.get(a, -1) for a, _, _ in pairs], dtype=np.int32)
    ids_b = np.array([number.get(b, -1) for _, b, _ in pairs], dtype=np.int32)
    assert are_nicknames(ids_a, ids_b).tolist() == [expected for *_, expected in pairs]
    assert are_nicknames(ids_b, ids_a).tolist() == [expected for *_, expected in pairs]  # symmetric


@settings(max_examples=40, deadline=None)
@given(values=st.lists(st.one_of(st.none(), st.text(alphabet="abcé字 @.-0123", max_size=8)), min_size=2, max_size=40),
       data=st.data())
def test_comparing_among_taken_records_gives_the_levels_of_the_whole(values, data):
    """A dask comparison task gets only its bucket's records (PreparedComparison.take): every
    method must give those records' pairs the levels the whole table gives them."""
    rows = np.array(sorted(data.draw(st.sets(st.integers(0, len(values) - 1), min_size=2))), dtype=np.int64)
    column = pd.Series(values, dtype="str")
    configs = [ComparisonConfig(name="jw", column="c", method="jaro_winkler", thresholds=[0.9, 0.7], nicknames=True),
               ComparisonConfig(name="lev", column="c", method="levenshtein", thresholds=[0.8]),
               ComparisonConfig(name="grams", column="c", method="jaccard", ngram=2, thresholds=[0.5]),
               ComparisonConfig(name="mail", column="c", method="email", tf_adjust=True),
               ComparisonConfig(name="phone", column="c", method="phone", digits=2)]
    left, right = (a.ravel() for a in np.meshgrid(np.arange(len(rows)), np.arange(len(rows))))
    for config in configs:
        whole = prepare(config, {"c": column})
        taken = whole.take(rows)
        np.testing.assert_array_equal(compare_levels(taken, left, right),
                                      compare_levels(whole, rows[left], rows[right]), err_msg=config.name)


def test_taken_strings_are_the_rows_code_points():
    from resolver.kernels.strings import encode

    encoded = encode(pd.Series(["ab", None, "", "é字x", "z"], dtype="str"))
    taken = encoded.take(np.array([3, 1, 0, 3]))
    assert taken.lengths.tolist() == [3, 0, 2, 3] and taken.valid.tolist() == [True, False, True, True]
    assert [chr(c) for c in taken.codes] == list("é字x") + list("ab") + list("é字x")


def test_huge_texts_are_compared_on_their_first_characters():
    # 900,000 characters a side: compared in full, Jaro-Winkler and Levenshtein would take hours a
    # pair; on their first 256 characters they take microseconds, and exact still reads all of it.
    from resolver.kernels.strings import COMPARED_CHARS

    head = "ab" * (COMPARED_CHARS // 2)
    left, right = [head + "x" * 900_000, head + "x" * 900_000, "maria" * 180_000], \
        [head + "y" * 900_000, head + "x" * 900_000, "marie" * 180_000]
    for method, top in (("jaro_winkler", "jw>=0.92"), ("levenshtein", "lev>=0.9")):
        got = _levels({"method": method, "thresholds": [0.92 if method == "jaro_winkler" else 0.9]}, left, right)
        assert got == [top, "exact", "else"]
