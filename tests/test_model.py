"""Fellegi-Sunter: EM recovers known parameters, the guards warn, models round-trip through JSON."""

import numpy as np
import pandas as pd
import pytest

from resolver.compare import prepare
from resolver.config import ComparisonConfig
from resolver.model import (
    ComparisonModel,
    FSModel,
    ModelError,
    candidate_u,
    expectation_maximisation,
    match_weights,
    pattern_counts,
    probabilities,
    training_warnings,
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
    m, _, lam, iterations, converged = expectation_maximisation(
        patterns, pattern_rule, counts, np.zeros((2, 3), bool), start, TRUE_U, np.array([0.2, 0.2]), 200, 1e-7,
        known=(known_patterns, known_counts),
    )
    assert converged and iterations < 200
    for k in range(3):
        np.testing.assert_allclose(m[k][1:], TRUE_M[k][1:], atol=0.02)
    np.testing.assert_allclose(lam, TRUE_LAMBDA, rtol=0.1)


def test_candidate_u_is_the_level_distribution_per_rule():
    levels = np.array([[1], [1], [2], [0], [2], [2]], dtype=np.int8)
    rules = np.array([0, 0, 0, 0, 1, 1])
    patterns, pattern_rule, counts = pattern_counts(levels, rules)
    (u,) = candidate_u(patterns, pattern_rule, counts, 2, [3])
    np.testing.assert_allclose(u[:, 1:], [[2.5 / 4, 1.5 / 4], [0.5 / 3, 2.5 / 3]])  # +0.5 pseudo-counts


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


def test_guard_warns_when_em_learned_the_wrong_class():
    assert training_warnings([_model().comparisons[0]]) == []
    (warning, *_) = training_warnings([_model(m_exact=0.005).comparisons[0]])
    assert "households" in warning and "'name'" in warning


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
    import resolver.model as model

    monkeypatch.setattr(model, "PATTERN_CHUNK", 997)
    rng = np.random.default_rng(0)
    levels = rng.integers(0, 5, (20_000, 6)).astype(np.int8)
    rules = rng.integers(0, 4, 20_000)
    patterns, pattern_rules, counts = model.pattern_counts(levels, rules)
    expected, expected_counts = np.unique(np.column_stack([rules, levels]), axis=0, return_counts=True)
    got = np.column_stack([pattern_rules, patterns, counts])
    want = np.column_stack([expected, expected_counts])
    assert np.array_equal(got[np.lexsort(got.T[::-1])], want[np.lexsort(want.T[::-1])])
