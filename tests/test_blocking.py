"""Blocking: key expressions, counts from block sizes, each pair once, the cap, deterministic skips."""

from itertools import combinations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resolver.matching.blocking import build_blocking_keys, candidate_pairs, key_values, parse_key
from resolver.config import BlockingConfig, BlockingRule


def _attrs(**columns) -> dict[str, pd.Series]:
    return {name: pd.Series(values, dtype="str") for name, values in columns.items()}


def test_key_expressions_parse_and_reject_nonsense():
    assert parse_key("last_name").columns == ("last_name",)
    expr = parse_key("prefix(last_name, 4)")
    assert (expr.function, expr.columns, expr.args) == ("prefix", ("last_name",), (4,))
    assert parse_key("unordered(first_name, last_name)").columns == ("first_name", "last_name")
    with pytest.raises(ValueError, match="unknown key function 'shout'"):
        parse_key("shout(last_name)")
    with pytest.raises(ValueError, match="takes 1 column"):
        parse_key("prefix(last_name)")
    with pytest.raises(ValueError, match="positive integer"):
        parse_key("prefix(last_name, x)")


def test_derived_keys():
    a = _attrs(name=["johnson", "jo", None, "mary ann"], phone=["+14155550123", "+1415", None, "+447700900123"],
               email=["jane.doe@x.com", None, "bad", "a@b"], dob=["1980-02-03", "x", None, "2001-12-31"],
               first=["ann", "lee", "bo", None], last=["lee", "ann", "bo", "x"])
    assert key_values(parse_key("prefix(name, 3)"), a).tolist()[:2] == ["joh", "jo"]
    last7 = key_values(parse_key("last_digits(phone, 7)"), a)
    assert last7.iloc[0] == "5550123" and pd.isna(last7.iloc[1]) and last7.iloc[3] == "0900123"
    assert key_values(parse_key("email_local(email)"), a).iloc[0] == "jane.doe"
    assert key_values(parse_key("email_domain(email)"), a).iloc[0] == "x.com"
    years = key_values(parse_key("year(dob)"), a)
    assert years.iloc[0] == "1980" and pd.isna(years.iloc[1]) and years.iloc[3] == "2001"
    assert key_values(parse_key("initials(name)"), a).iloc[3] == "ma"
    swapped = key_values(parse_key("unordered(first, last)"), a)
    assert swapped.iloc[0] == swapped.iloc[1] == "ann|lee"
    assert pd.isna(swapped.iloc[3])
    phonetic = key_values(parse_key("metaphone(name)"), _attrs(name=["catherine", "kathryn", "smith"]))
    assert phonetic.iloc[0] == phonetic.iloc[1] != phonetic.iloc[2]


def _config(rules, cap=500) -> BlockingConfig:
    return BlockingConfig(max_block_size=cap, rules=[BlockingRule(name=n, keys=k) for n, k in rules])


def test_each_pair_once_with_the_first_rule_that_found_it_and_no_deterministic_pairs():
    a = _attrs(last=["smith", "smith", "smith", "jones", "jones"], zip=["1", "1", "2", "9", "9"])
    config = _config([("surname_zip", ["last", "zip"]), ("surname", ["last"])])
    keys = build_blocking_keys(config, a, np.ones(5, bool))
    labels = np.array([0, 1, 2, 3, 3])  # records 3 and 4 are already one person
    pairs = candidate_pairs(keys, labels)
    got = sorted(zip(pairs.left.tolist(), pairs.right.tolist(), pairs.rule.tolist()))
    assert got == [(0, 1, 0), (0, 2, 1), (1, 2, 1)]
    assert pairs.per_rule == [1, 2]


def test_oversized_blocks_are_skipped_with_a_warning_naming_the_key():
    a = _attrs(last=["smith"] * 6 + ["li", "li"])
    config = _config([("surname", ["last"])], cap=5)
    keys = build_blocking_keys(config, a, np.ones(8, bool))
    plan = keys.plans[0]
    assert (plan.pairs, plan.capped_blocks, plan.capped_records, plan.capped_pairs) == (1, 1, 6, 15)
    assert plan.largest[0] == ("smith", 6)
    (warning,) = keys.warnings(5)
    assert "'smith'" in warning and "6 records" in warning
    pairs = candidate_pairs(keys, np.arange(8))
    assert list(zip(pairs.left, pairs.right)) == [(6, 7)]


def test_inactive_and_missing_records_join_no_block():
    a = _attrs(last=["smith", "smith", None, None, "smith"])
    keys = build_blocking_keys(_config([("surname", ["last"])]), a, np.array([True, True, True, True, False]))
    assert keys.plans[0].keyed_records == 2
    assert list(zip(*[x.tolist() for x in (candidate_pairs(keys, np.arange(5)).left, candidate_pairs(keys, np.arange(5)).right)])) == [(0, 1)]


@settings(max_examples=60, deadline=None)
@given(
    first=st.lists(st.sampled_from(["a", "b", "c", None]), min_size=2, max_size=40),
    data=st.data(),
    cap=st.integers(2, 8),
)
def test_pairs_and_counts_equal_brute_force(first, data, cap):
    n = len(first)
    second = data.draw(st.lists(st.sampled_from(["x", "y", None]), min_size=n, max_size=n))
    labels = np.array(data.draw(st.lists(st.integers(0, n), min_size=n, max_size=n)))
    a = _attrs(f=first, s=second)
    config = _config([("fs", ["f", "s"]), ("f", ["f"]), ("s", ["s"])], cap=cap)
    keys = build_blocking_keys(config, a, np.ones(n, bool))
    pairs = candidate_pairs(keys, labels)

    def blocks(cols):
        groups: dict = {}
        for i in range(n):
            values = tuple(a[c].iloc[i] for c in cols)
            if not any(pd.isna(v) for v in values):
                groups.setdefault(values, []).append(i)
        return [g for g in groups.values() if len(g) <= cap], [g for g in groups.values() if len(g) > cap]

    expected, seen = {}, set()
    for r, cols in enumerate((["f", "s"], ["f"], ["s"])):
        kept, over = blocks(cols)
        assert keys.plans[r].pairs == sum(len(g) * (len(g) - 1) // 2 for g in kept)
        assert keys.plans[r].capped_blocks == len(over)
        for g in kept:
            for i, j in combinations(g, 2):
                if (i, j) not in seen:
                    seen.add((i, j))
                    if labels[i] != labels[j]:
                        expected[(i, j)] = r
    got = {(int(i), int(j)): int(r) for i, j, r in zip(pairs.left, pairs.right, pairs.rule)}
    assert len(got) == len(pairs)  # no pair twice
    assert got == expected


def test_more_records_than_int32_positions_are_refused_with_a_clear_error():
    from resolver.config import ConfigError
    from resolver.matching.blocking import MAX_MATCHED_RECORDS, check_positions_fit

    check_positions_fit(MAX_MATCHED_RECORDS)  # the last count that fits
    with pytest.raises(ConfigError, match="int32"):
        check_positions_fit(MAX_MATCHED_RECORDS + 1)
