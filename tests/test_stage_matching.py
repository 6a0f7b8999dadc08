"""Stage 3, probabilistic matching, on five records: blocking keys -> candidate pairs -> comparison
levels -> pattern counts -> EM -> match weights -> decisions. Every expected value is written out by
hand from the literal records below.
"""

import numpy as np
import pandas as pd
import pytest

from resolver.config import BlockingConfig, BlockingRule, ComparisonConfig
from resolver.matching.blocking import build_blocking_keys, candidate_pairs
from resolver.matching.compare import comparison_matrix, level_labels, prepare_all
from resolver.matching.model import ComparisonModel, FSModel, fit_em, match_weights, pattern_counts, probabilities

# Five records in match form (normalized attributes). r0 and r1 already share an email: the
# deterministic graph made them one person, so they are no candidate pair.
ATTRIBUTES = {
    "first_name": ["ann", "anne", "ann", "bob", "robert"],
    "last_name": ["lee", "lee", "leigh", "stone", "stone"],
    "dob": ["1980-03-04", "1980-03-04", "1980-04-03", "1975-01-01", None],
    "zip": ["60601", "60601", "60601", "10001", "10001"],
}
PERSON = np.array([0, 0, 1, 2, 3])  # deterministic person of each record

RULES = [BlockingRule(name="name_zip", keys=["prefix(last_name, 3)", "zip"]),
         BlockingRule(name="birth_year", keys=["year(dob)"])]
COMPARISONS = [
    ComparisonConfig(name="first", column="first_name", method="jaro_winkler", thresholds=[0.9], nicknames=True),
    ComparisonConfig(name="dob", column="dob", method="date", years=[1]),
    ComparisonConfig(name="last", column="last_name", method="jaro_winkler", thresholds=[0.9, 0.7]),
]


def attributes() -> dict[str, pd.Series]:
    return {name: pd.Series(values, dtype="str") for name, values in ATTRIBUTES.items()}


def blocking():
    return build_blocking_keys(BlockingConfig(rules=RULES), attributes(), np.ones(5, bool))


def pairs_of(candidates) -> list[tuple[int, int, int]]:
    return sorted(zip(candidates.left.tolist(), candidates.right.tolist(), candidates.rule.tolist()))


def test_blocking_plans_count_blocks_and_pairs():
    plans = blocking().plans
    # name_zip: lee|60601 (r0 r1), lei|60601 (r2), sto|10001 (r3 r4) -> 2 pairs
    assert (plans[0].keyed_records, plans[0].blocks, plans[0].pairs) == (5, 3, 2)
    assert sorted(plans[0].largest) == [("lee | 60601", 2), ("lei | 60601", 1), ("sto | 10001", 2)]
    # birth_year: 1980 (r0 r1 r2), 1975 (r3); r4 has no dob -> no key
    assert (plans[1].keyed_records, plans[1].blocks, plans[1].pairs) == (4, 2, 3)


def test_candidate_pairs_come_once_from_the_first_rule_and_skip_one_person():
    candidates = candidate_pairs(blocking(), PERSON)
    # (0, 1) is one person; (0, 2) and (1, 2) are only in the birth-year block
    assert pairs_of(candidates) == [(0, 2, 1), (1, 2, 1), (3, 4, 0)]
    assert candidates.per_rule == [1, 2]
    everyone_apart = candidate_pairs(blocking(), np.arange(5))
    assert pairs_of(everyone_apart) == [(0, 1, 0), (0, 2, 1), (1, 2, 1), (3, 4, 0)]


def test_level_labels_list_the_levels_best_first_after_null():
    assert level_labels(COMPARISONS[0]) == ["null", "exact", "nickname", "jw>=0.9", "else"]
    assert level_labels(COMPARISONS[1]) == ["null", "exact", "day/month swapped", "within 1 years", "else"]
    assert level_labels(COMPARISONS[2]) == ["null", "exact", "jw>=0.9", "jw>=0.7", "else"]


@pytest.mark.parametrize("left, right, expected", [
    (3, 4, ["nickname", "null", "exact"]),  # bob = robert; r4 has no dob
    (0, 2, ["exact", "day/month swapped", "else"]),  # lee/leigh: Jaro 0.689 (< 0.7: no Winkler boost)
    # anne/ann: the nicknames table lists ann for anne, and the nickname level comes before the
    # similarity's (Jaro-Winkler 0.942 would be jw>=0.9)
    (1, 2, ["nickname", "day/month swapped", "else"]),
])
def test_comparison_levels_of_named_pairs(left, right, expected):
    prepared = prepare_all(COMPARISONS, attributes())
    levels = comparison_matrix(prepared, np.array([left]), np.array([right]))
    assert [p.labels[level] for p, level in zip(prepared, levels[0])] == expected


def test_pattern_counts_are_the_distinct_rows_with_their_counts():
    levels = np.array([[1, 1], [2, 2], [1, 1], [0, 1], [2, 2], [2, 2]], dtype=np.int8)
    patterns, rules, counts = pattern_counts(levels, np.array([0, 0, 0, 0, 1, 1]))
    assert [(tuple(p), r, c) for p, r, c in zip(patterns.tolist(), rules.tolist(), counts.tolist())] == [
        ((0, 1), 0, 1), ((1, 1), 0, 2), ((2, 2), 0, 1), ((2, 2), 1, 2),
    ]


def test_em_on_a_tiny_pattern_table_finds_the_matches():
    # two comparisons (null, exact, else); u fixed at 1% agreement by chance. 92 pairs agree on
    # every comparison they have, 900 on none, 10 on one of two: EM calls the 92 matches.
    patterns = np.array([[0, 1], [1, 1], [1, 2], [2, 1], [2, 2]], dtype=np.int8)
    counts = np.array([2, 90, 5, 5, 900])
    u = [np.array([[np.nan, 0.01, 0.99]])] * 2
    fit = fit_em(patterns, np.zeros(5, np.int64), counts, np.zeros((1, 2), bool), [np.array([np.nan, 0.5, 0.5])] * 2,
                 u, np.array([0.5]), max_iterations=1000, tolerance=1e-9)
    assert fit.converged
    assert fit.match_rate[0] == pytest.approx(92 / 1002, abs=0.002)
    for m in fit.m:
        assert m[1] > 0.99 and m[2] < 0.01


def model(match_rate: float) -> FSModel:
    """Two comparisons with m = (0.9, 0.1) and u = (0.1, 0.9): exact weighs log2(9), else -log2(9)."""
    def comparison(name):
        return ComparisonModel(name, "exact", ["null", "exact", "else"], np.array([np.nan, 0.9, 0.1]),
                               np.array([[np.nan, 0.1, 0.9]]), np.array([np.nan, 0.1, 0.9]))
    return FSModel(["rule"], [comparison("a"), comparison("b")], np.zeros((1, 2), bool), np.array([match_rate]), 0.01)


def test_match_weights_add_the_prior_and_each_level():
    levels = np.array([[1, 1], [1, 2], [2, 2], [1, 0], [0, 0]], dtype=np.int8)
    weights = match_weights(model(0.5), levels, np.zeros(5, np.int64))  # prior weight log2(0.5/0.5) = 0
    w = np.log2(9)
    assert weights.tolist() == pytest.approx([2 * w, 0.0, -2 * w, w, 0.0])
    assert probabilities(weights).tolist() == pytest.approx([81 / 82, 0.5, 1 / 82, 0.9, 0.5])
    # a match rate of 1/5 puts log2(0.2 / 0.8) = -2 bits in front of every pair
    assert match_weights(model(0.2), levels[:1], np.zeros(1, np.int64)).tolist() == pytest.approx([2 * w - 2])


def decide(probability, auto_merge, review, vetoed):
    from resolver.matching.score import decide as _decide

    return _decide(np.asarray(probability), auto_merge, review, np.asarray(vetoed)).tolist()


def test_decisions_link_review_or_leave_apart():
    # 0 = link, 1 = review, 2 = no link; a vetoed pair (must_agree broken) is only reviewed
    assert decide([81 / 82, 0.85, 0.5, 0.3, 81 / 82], 0.85, 0.5, [False, False, False, False, True]) == [0, 0, 1, 2, 1]
