"""Fellegi-Sunter: EM recovers known parameters (two and three classes), the health check names what is
wrong, models round-trip through JSON."""

import numpy as np
import pandas as pd
import pytest

from resolver.matching.compare import prepare
from resolver.config import ComparisonConfig
from hypothesis import given, settings
from hypothesis import strategies as st

from resolver.matching.train import population_rate
from resolver.matching.model import (
    MAX_COPIED,
    ComparisonModel,
    FSModel,
    ModelError,
    comparison_weights,
    fit_em,
    health_problems,
    household_adjustments,
    is_monotone,
    kept_comparisons,
    match_weights,
    model_notes,
    monotone,
    pattern_counts,
    probabilities,
    tilted,
)

TRUE_M = [np.array([np.nan, 0.85, 0.10, 0.05]), np.array([np.nan, 0.9, 0.1]), np.array([np.nan, 0.7, 0.2, 0.1])]
TRUE_U = [  # per rule (2 rules)
    np.array([[np.nan, 0.02, 0.08, 0.90], [np.nan, 0.30, 0.20, 0.50]]),
    np.array([[np.nan, 0.05, 0.95], [np.nan, 0.60, 0.40]]),
    np.array([[np.nan, 0.01, 0.09, 0.90], [np.nan, 0.02, 0.18, 0.80]]),
]
TRUE_LAMBDA = np.array([0.03, 0.10])


def _simulate(n_per_rule: int, seed: int):
    rng = np.random.default_rng(seed)
    levels, rules = [], []
    for r, lam in enumerate(TRUE_LAMBDA):
        match = rng.random(n_per_rule) < lam
        cols = []
        for k in range(3):
            m, u = TRUE_M[k][1:], TRUE_U[k][r, 1:]
            draw_m = rng.choice(len(m), n_per_rule, p=m) + 1
            draw_u = rng.choice(len(u), n_per_rule, p=u) + 1
            col = np.where(match, draw_m, draw_u)
            col[rng.random(n_per_rule) < 0.1] = 0  # missing values
            cols.append(col)
        levels.append(np.column_stack(cols))
        rules.append(np.full(n_per_rule, r))
    known = np.column_stack([rng.choice(len(m) - 1, 5000, p=m[1:]) + 1 for m in TRUE_M])
    return np.concatenate(levels).astype(np.int8), np.concatenate(rules), known.astype(np.int8)


def test_em_recovers_m_and_the_match_rate_per_rule():
    levels, rules, known = _simulate(100_000, seed=3)
    patterns, pattern_rule, counts = pattern_counts(levels, rules)
    known_patterns, _, known_counts = pattern_counts(known)
    start = [np.array([np.nan, 0.6, 0.2, 0.2]), np.array([np.nan, 0.5, 0.5]), np.array([np.nan, 0.4, 0.3, 0.3])]
    fit = fit_em(patterns, pattern_rule, counts, np.zeros((2, 3), bool), start, TRUE_U, np.array([0.2, 0.2]), 200, 1e-7,
                 known=(known_patterns, known_counts))
    assert fit.converged and fit.iterations < 200 and fit.household_rate is None
    for k in range(3):
        np.testing.assert_allclose(fit.m[k][1:], TRUE_M[k][1:], atol=0.02)
    np.testing.assert_allclose(fit.match_rate, TRUE_LAMBDA, rtol=0.1)


# Three classes: comparisons 0-1 are person fields (first name, birth date), 2-4 household fields
# (surname, address, phone).
M3 = [np.array([np.nan, 0.90, 0.07, 0.03]), np.array([np.nan, 0.92, 0.05, 0.03]), np.array([np.nan, 0.95, 0.05]),
      np.array([np.nan, 0.85, 0.10, 0.05]), np.array([np.nan, 0.80, 0.20])]
H3 = [None, None, np.array([np.nan, 0.80, 0.20]), np.array([np.nan, 0.90, 0.07, 0.03]), np.array([np.nan, 0.50, 0.50])]
U3 = [np.array([np.nan, 0.01, 0.04, 0.95]), np.array([np.nan, 0.001, 0.2, 0.799]), np.array([np.nan, 0.02, 0.98]),
      np.array([np.nan, 0.001, 0.019, 0.98]), np.array([np.nan, 0.001, 0.999])]


def _simulate_households(n: int, shares: tuple[float, float], seed: int):
    """Pairs drawn from three classes: match (M3), household (H3 on household fields, U3 elsewhere)
    and unrelated (U3). Returns levels and the true class (0 match, 1 household, 2 unrelated)."""
    rng = np.random.default_rng(seed)
    cls = rng.choice(3, n, p=[shares[0], shares[1], 1 - sum(shares)])
    cols = []
    for k in range(len(M3)):
        tables = [M3[k], H3[k] if H3[k] is not None else U3[k], U3[k]]
        draws = [rng.choice(len(t) - 1, n, p=t[1:]) + 1 for t in tables]
        cols.append(np.choose(cls, draws))
    return np.column_stack(cols).astype(np.int8), cls


def test_em_with_a_household_class_tells_households_from_people():
    levels, cls = _simulate_households(200_000, (0.05, 0.30), seed=11)
    patterns, rules, counts = pattern_counts(levels)
    k_all = len(M3)
    u = [np.tile(x, (1, 1)) for x in U3]
    m0 = [np.concatenate([[np.nan], np.full(len(x) - 1, 1 / (len(x) - 1))]) for x in U3]
    for x in m0:  # agreement more likely than not: a neutral start
        x[1] += 0.3
        x[1:] /= x[1:].sum()
    h0 = [None if H3[k] is None else m0[k].copy() for k in range(k_all)]
    fit = fit_em(patterns, rules, counts, np.zeros((1, k_all), bool), m0, u, np.array([0.1]), 2000, 1e-7,
                 h0=h0, household_rate0=np.array([0.05]), monotone_against=U3, h_reference=U3)
    assert fit.converged
    np.testing.assert_allclose(fit.match_rate, [0.05], rtol=0.1)
    np.testing.assert_allclose(fit.household_rate, [0.30], rtol=0.1)
    for k in range(k_all):
        np.testing.assert_allclose(fit.m[k][1:], M3[k][1:], atol=0.03)
        # household fields learned; person fields: u, with an exact share of their own (here u's)
        np.testing.assert_allclose(fit.h[k][1:], (H3[k] if H3[k] is not None else U3[k])[1:], atol=0.03)
    # a household (same surname, address and phone, another first name and birth date) is not a
    # match; a pair agreeing on everything is
    model = FSModel(["r"], [ComparisonModel(str(k), "x", [str(i) for i in range(len(U3[k]))], fit.m[k], u[k], U3[k],
                                            h=fit.h[k], household_field=H3[k] is not None) for k in range(k_all)],
                    np.zeros((1, k_all), bool), fit.match_rate, 0.0, {}, fit.household_rate)
    pairs = np.array([[3, 3, 1, 1, 1], [1, 1, 1, 1, 1]], dtype=np.int8)
    p = probabilities(match_weights(model, pairs, np.zeros(2, np.int64)))
    assert p[0] < 0.01 and p[1] > 0.99


def test_the_household_adjustment_is_the_three_class_posterior():
    c0 = ComparisonModel("first", "exact", ["null", "exact", "else"], np.array([np.nan, 0.9, 0.1]),
                         np.array([[np.nan, 0.01, 0.99]]), np.array([np.nan, 0.01, 0.99]))
    c1 = ComparisonModel("street", "exact", ["null", "exact", "else"], np.array([np.nan, 0.8, 0.2]),
                         np.array([[np.nan, 0.001, 0.999]]), np.array([np.nan, 0.001, 0.999]),
                         h=np.array([np.nan, 0.95, 0.05]), household_field=True)
    model = FSModel(["r"], [c0, c1], np.zeros((1, 2), bool), np.array([1e-4]), 0.0, {}, np.array([1e-3]))
    levels = np.array([[1, 1], [2, 1], [2, 2], [0, 1]], dtype=np.int8)
    got = probabilities(match_weights(model, levels, np.zeros(4, np.int64)))
    lam_m, lam_h, lam_u = 1e-4, 1e-3, 1 - 1e-4 - 1e-3
    want = []
    for a, b in levels:
        pm = (c0.m[a] if a else 1) * c1.m[b]
        ph = (c0.u_random[a] if a else 1) * c1.h[b]
        pu = (c0.u_random[a] if a else 1) * c1.u_random[b]
        want.append(lam_m * pm / (lam_m * pm + lam_h * ph + lam_u * pu))
    np.testing.assert_allclose(got, want, rtol=1e-9)
    adjustment = household_adjustments(model, levels, np.zeros(4, np.int64))
    assert (adjustment <= 0).all() and adjustment[0] < adjustment[2]  # a shared street is household evidence


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0.01, 10.0), min_size=2, max_size=7), st.lists(st.floats(0.01, 10.0), min_size=7, max_size=7))
def test_monotone_pools_violators_and_keeps_a_distribution(raw_p, raw_u):
    p = np.array([np.nan, *raw_p]) / sum(raw_p)
    u = np.array([np.nan, *raw_u[: len(raw_p)]]) / sum(raw_u[: len(raw_p)])
    out = monotone(p, u)
    ratio = out[1:] / u[1:]
    assert np.all(np.diff(ratio) <= 1e-9 * ratio.max())
    assert np.isclose(out[1:].sum(), 1.0)
    if np.all(np.diff(p[1:] / u[1:]) <= 0):
        np.testing.assert_allclose(out[1:], p[1:])
    # the least-squares property of isotonic regression: no monotone ratio is closer (weighted by u)
    assert is_monotone(out, u)


def test_tilted_keeps_u_but_its_exact_share():
    u = np.array([np.nan, 0.01, 0.09, 0.9])
    out = tilted(u, 0.1)
    np.testing.assert_allclose(out[1:], [0.1, 0.09 * 0.9 / 0.99, 0.9 * 0.9 / 0.99])
    np.testing.assert_allclose(tilted(u, 0.001)[1:], u[1:])  # never below strangers' agreement


@pytest.mark.parametrize("copied, learned", [(0.08, 0.08), (0.3, MAX_COPIED)])
def test_em_learns_that_households_share_a_copied_first_name_sometimes(copied, learned):
    # household pairs agree on person field 0 beyond chance (a value copied from a relative); the
    # share learned is capped: a class that agrees on a person field that often is no household
    h_person = tilted(U3[0], U3[0][1] + copied * (1 - U3[0][1]))
    H3_copy = [h_person, *H3[1:]]
    rng = np.random.default_rng(5)
    n = 200_000
    cls = rng.choice(3, n, p=[0.05, 0.3, 0.65])
    cols = []
    for k in range(len(M3)):
        tables = [M3[k], H3_copy[k] if H3_copy[k] is not None else U3[k], U3[k]]
        draws = [rng.choice(len(t) - 1, n, p=t[1:]) + 1 for t in tables]
        cols.append(np.choose(cls, draws))
    patterns, rules, counts = pattern_counts(np.column_stack(cols).astype(np.int8))
    m0 = [tilted(x, 0.7) for x in U3]
    h0 = [None if H3[k] is None else m0[k].copy() for k in range(len(M3))]
    fit = fit_em(patterns, rules, counts, np.zeros((1, len(M3)), bool), m0, [x[None, :] for x in U3],
                 np.array([0.1]), 3000, 1e-7, h0=h0, household_rate0=np.array([0.05]), monotone_against=U3,
                 h_reference=U3)
    want = U3[0][1] + learned * (1 - U3[0][1])
    assert fit.h[0][1] == pytest.approx(want, abs=0.015) and fit.h[1][1] == pytest.approx(U3[1][1], abs=0.01)
    np.testing.assert_allclose(fit.m[0][1:], M3[0][1:], atol=0.03)


def test_monotone_pools_a_violating_pair():
    p, u = np.array([np.nan, 0.2, 0.6, 0.2]), np.array([np.nan, 0.1, 0.1, 0.8])
    out = monotone(p, u)
    np.testing.assert_allclose(out[1:], [0.4, 0.4, 0.2])  # levels 1 and 2 share the ratio (0.2+0.6)/(0.1+0.1)


def test_population_rate_from_rule_recalls():
    # 1,000 matches among 1e6 pairs; rule 0 finds 40% of them among 2,000 pairs, rule 1 half among 10,000
    rate, estimates = population_rate(np.array([400.0, 500.0]), np.array([0.4, 0.5]), 1e6)
    np.testing.assert_allclose(estimates, [1000, 1000])
    assert rate == pytest.approx(1e-3)  # 900 found / 0.9 recall
    rate, _ = population_rate(np.array([400.0, 500.0]), np.array([np.nan, np.nan]), 1e6)
    assert rate == pytest.approx(500 / 1e6)  # no recall measured: a lower bound, the rule finding the most
    # a rule that sees 0.3% of a class cannot multiply the 3 pairs it took for it by 300: the
    # rules' estimates weigh by what they see (sum of found / sum of recall)
    rate, estimates = population_rate(np.array([3.0, 0.05]), np.array([0.003, 0.5]), 1e6)
    assert estimates == pytest.approx([1000, 0.1]) and rate == pytest.approx(3.05 / 0.503 / 1e6)


def _model(m_exact=0.9, u_exact=0.01) -> FSModel:
    c = ComparisonModel("name", "exact", ["null", "exact", "else"], np.array([np.nan, m_exact, 1 - m_exact]),
                        np.array([[np.nan, u_exact, 1 - u_exact]]), np.array([np.nan, u_exact, 1 - u_exact]))
    return FSModel(["r"], [c], np.zeros((1, 1), bool), np.array([0.01]), 1e-6, {})


def test_weights_probabilities_and_the_null_level():
    model = _model()
    weights = match_weights(model, np.array([[1], [2], [0]], dtype=np.int8), np.zeros(3, np.int64))
    prior = np.log2(0.01 / 0.99)
    np.testing.assert_allclose(weights, [prior + np.log2(90), prior + np.log2(0.1 / 0.99), prior])
    np.testing.assert_allclose(probabilities(np.array([0.0, 1.0])), [0.5, 2 / 3])


def test_health_check_names_each_problem():
    assert health_problems(_model(m_exact=0.99, u_exact=1e-4), auto_merge=0.85) == []
    problems = health_problems(_model(m_exact=0.005))
    assert any("'name'" in p and "m <= u at 'exact'" in p for p in problems)
    weak = _model(m_exact=0.9, u_exact=0.5)  # agreeing on the one field is barely evidence
    (problem,) = health_problems(weak, auto_merge=0.85)
    assert "every compared field" in problem and "0.018" in problem
    broken = _model()
    broken.training = {"converged": False, "iterations": 50,
                       "sessions": {"tight": {"pairs": 5000, "match_rate": 3e-9}, "empty": {"pairs": 0, "match_rate": 0.0}}}
    problems = health_problems(broken)
    assert any("'tight'" in p and "3e-09" in p for p in problems) and not any("'empty'" in p for p in problems)
    assert any("did not converge in 50 iterations" in p for p in problems)
    edited = _model()
    edited.comparisons[0] = ComparisonModel("name", "x", ["null", "exact", "close", "else"], np.array([np.nan, 0.5, 0.45, 0.05]),
                                            np.array([[np.nan, 0.1, 0.01, 0.89]]), np.array([np.nan, 0.1, 0.01, 0.89]))
    assert any("not monotone" in p for p in health_problems(edited))


def test_model_round_trips_and_refuses_another_configuration(tmp_path):
    config = ComparisonConfig(name="name", column="col", method="exact")
    prepared = [prepare(config, {"col": pd.Series(["a", "b"], dtype="str")})]
    model = _model()
    model.save(tmp_path / "model.json")
    loaded = FSModel.load(tmp_path / "model.json", prepared, ["r"])
    levels = np.array([[1], [2]], dtype=np.int8)
    np.testing.assert_allclose(match_weights(loaded, levels, np.zeros(2, np.int64)),
                               match_weights(model, levels, np.zeros(2, np.int64)))
    with pytest.raises(ModelError, match="blocking rules"):
        FSModel.load(tmp_path / "model.json", prepared, ["other"])
    other = [prepare(ComparisonConfig(name="name", column="col", method="email"), {"col": pd.Series(["a@b"], dtype="str")})]
    with pytest.raises(ModelError, match="comparisons"):
        FSModel.load(tmp_path / "model.json", other, ["r"])
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ModelError, match="cannot read"):
        FSModel.load(tmp_path / "bad.json", prepared, ["r"])


def test_pattern_counts_in_chunks_equal_a_row_wise_unique(monkeypatch):
    import resolver.matching.model as model

    monkeypatch.setattr(model, "PATTERN_CHUNK", 997)
    rng = np.random.default_rng(0)
    levels = rng.integers(0, 5, (20_000, 6)).astype(np.int8)
    rules = rng.integers(0, 4, 20_000)
    patterns, pattern_rules, counts = model.pattern_counts(levels, rules)
    expected, expected_counts = np.unique(np.column_stack([rules, levels]), axis=0, return_counts=True)
    got = np.column_stack([pattern_rules, patterns, counts])
    want = np.column_stack([expected, expected_counts])
    assert np.array_equal(got[np.lexsort(got.T[::-1])], want[np.lexsort(want.T[::-1])])


def test_a_constant_column_is_a_note_not_a_health_problem():
    constant = ComparisonModel("zipcode", "exact", ["null", "exact", "else"], np.array([np.nan, 0.966, 0.034]),
                               np.array([[np.nan, 0.966, 0.034]]), np.array([np.nan, 0.966, 0.034]))
    model = _model(m_exact=0.99, u_exact=1e-4)
    model.comparisons.append(constant)
    model.neutral = np.zeros((1, 2), bool)
    assert health_problems(model, auto_merge=0.85) == []
    (note,) = model_notes(model)
    assert "'zipcode'" in note and "97% of random pairs agree" in note


def test_redundant_comparisons_count_once():
    # an address and its street say the same thing: a pair that moved loses the bits once
    address = ComparisonModel("address", "exact", ["null", "exact", "else"], np.array([np.nan, 0.7, 0.3]),
                              np.array([[np.nan, 0.01, 0.99]]), np.array([np.nan, 0.01, 0.99]))
    street = ComparisonModel("street", "exact", ["null", "exact", "else"], np.array([np.nan, 0.72, 0.28]),
                             np.array([[np.nan, 0.02, 0.98]]), np.array([np.nan, 0.02, 0.98]))
    name = _model(m_exact=0.9, u_exact=0.01).comparisons[0]
    model = FSModel(["r"], [name, address, street], np.zeros((1, 3), bool), np.array([0.01]), 0.0,
                    {"associated_comparisons": [["address", "street"]]})
    levels = np.array([[1, 2, 2], [1, 1, 1], [1, 1, 2]], dtype=np.int8)
    rule = np.zeros(3, np.int64)
    per = comparison_weights(model, levels, rule)
    w_address, w_street = np.log2(0.3 / 0.99), np.log2(0.28 / 0.98)
    np.testing.assert_allclose(per[0], [np.log2(90), 0.0, w_street])  # the stronger of the two "else"
    np.testing.assert_allclose(per[1], [np.log2(90), np.log2(70), 0.0])
    assert (kept_comparisons(model, levels, rule).sum(axis=1) == 2).all()
    alone = FSModel(["r"], [name, address, street], np.zeros((1, 3), bool), np.array([0.01]), 0.0, {})
    assert comparison_weights(alone, levels, rule)[0, 1:].sum() == pytest.approx(w_address + w_street)
