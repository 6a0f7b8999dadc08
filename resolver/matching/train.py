"""Training the model without labels: the design of the training (TrainingDesign: sessions per
blocking rule, selection-biased comparisons, associated places, the household class), u from
uniformly random record pairs, m by EM over each rule's candidate pairs, and the match rate
of the whole population from the rules' recalls (resolver/matching/model.py holds the model)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from resolver.compute.backend import CPU, Backend, to_host
from resolver.config import Config, ModelOptions
from resolver.keys import parse_key
from resolver.matching.blocking import PairScope
from resolver.matching.compare import PreparedComparison, comparison_matrix
from resolver.matching.model import (
    M_FLOOR,
    RATE_PSEUDO_PAIRS,
    ComparisonModel,
    FSModel,
    class_posteriors,
    default_m,
    fit_em,
    floored,
    level_distribution,
    monotone,
    pattern_counts,
    random_pairs,
    same_person_pairs,
)


DET_SAMPLE_PAIRS = 200_000


def _pairs_of_groups(codes: np.ndarray) -> int:
    sizes = np.unique(codes, return_counts=True)[1] if len(codes) else np.zeros(0, np.int64)
    return int((sizes * (sizes - 1) // 2).sum())


def allowed_pairs(active: np.ndarray, scope: PairScope | None) -> int:
    """Pairs of active records the link type allows (all of them without a scope)."""
    n = int(active.sum())
    if scope is None:
        return n * (n - 1) // 2
    within = _pairs_of_groups(to_host(scope.groups)[active])
    return n * (n - 1) // 2 - within if scope.link_type == "link_only" else within


def _within_person_pairs(labels: np.ndarray, active: np.ndarray, scope: PairScope | None = None) -> int:
    """Pairs of active records inside one deterministic person (that the link type allows)."""
    labels = np.asarray(labels, dtype=np.int64)[active]
    if scope is None:
        return _pairs_of_groups(labels)
    groups = to_host(scope.groups)[active].astype(np.int64)
    both = _pairs_of_groups(labels * (int(groups.max(initial=0)) + 1) + groups)  # same person, same group
    return _pairs_of_groups(labels) - both if scope.link_type == "link_only" else both


def selection_biased(config: Config) -> set[str]:
    """Attributes read from a column that is also an identifier column of the same source: the
    deterministic persons were formed by agreeing on them, so they say nothing about m there."""
    biased = set()
    for source in config.sources:
        if source.kind != "records":
            continue
        identifier_columns = {c for cols in source.identifier_columns().values() for c in cols}
        for name, cols in source.attribute_columns().items():
            if identifier_columns & set(cols):
                biased.add(name)
    return biased


def _key_columns(keys: list[str]) -> set[str]:
    return {c for k in keys for c in parse_key(k).columns}


@dataclass
class TrainingDesign:
    """What the configuration says about training, beside the data: one EM session per blocking
    rule (every pair of its blocks) and one per rule's refined blocks (over-cap blocks re-blocked
    by finer keys), sessions 0..R-1 and R..2R-1, each with the columns it selects on."""

    rules: list[str]
    session_columns: list[set[str]]  # per session, every column its keys (and refine keys) read
    compared_columns: list[set[str]]  # per comparison, its columns
    household_fields: list[bool]
    biased: set[str] = field(default_factory=set)
    # Per comparison: a place (a household field of free text or numbers: street, city, postcode,
    # state, country), the kind of field nested in another (a city and its postcodes)
    places: list[bool] = field(default_factory=list)
    # (K, K): places whose exact agreement goes together among random pairs: a session selected on
    # one has the other's distribution changed too
    associated: np.ndarray | None = None
    # The deterministic persons are labelled matches (their pairs enter every M-step for m), not
    # just EM's starting point: only while the identity guards keep households apart
    labelled: bool = True

    @classmethod
    def of(cls, config: Config, prepared: list[PreparedComparison]) -> TrainingDesign:
        rules = config.matching.blocking.rules
        plain = [_key_columns(r.keys) for r in rules]
        refined = [columns | _key_columns(r.refine_keys) for columns, r in zip(plain, rules)]
        households = [p.config.household_field() for p in prepared]
        places = [shared and config.matching.normalizer(p.config.columns[0]) in ("text", "number", "raw")
                  for p, shared in zip(prepared, households)]
        return cls([r.name for r in rules], plain + refined, [set(p.config.columns) for p in prepared], households,
                   selection_biased(config), places, labelled=config.identity.guards)

    @property
    def n_sessions(self) -> int:
        return 2 * len(self.rules)

    def session_names(self) -> list[str]:
        return self.rules + [f"{r} (refined blocks)" for r in self.rules]

    def selected(self) -> np.ndarray:
        """(n_sessions, K): comparisons of a column the session's pairs were selected on, and those
        associated with one (a city rule's pairs share postcodes far more often than random pairs
        do, matches or not): its pairs would bias m there, and random-pair u would not fit its
        non-matches there."""
        direct = np.array([[bool(c & s) for c in self.compared_columns] for s in self.session_columns], dtype=bool)
        if self.associated is None:
            return direct
        return direct | ((direct.astype(np.int64) @ self.associated.astype(np.int64)) > 0)

    def independent_sessions(self, rule: int) -> np.ndarray:
        """Per session: its keys read none of the columns `rule`'s keys read, nor any comparison
        associated with them, so its pairs show how often a class's pairs agree on that rule's key
        (conditional independence)."""
        columns = self.session_columns[rule]
        selected = self.selected()
        n = len(self.rules)
        return np.array([s % n != rule and not (self.session_columns[s] & columns)
                         and not (selected[s] & selected[rule]).any() for s in range(self.n_sessions)])


def associated_places(sampled: np.ndarray, places: list[bool], min_lift: float = 4.0,
                      min_pairs: int = 10) -> np.ndarray:
    """(K, K): pairs of places whose exact agreement goes together among random record pairs that
    agree on no other field (so that duplicates, which agree on everything, do not count): at least
    `min_pairs` agree on both, `min_lift` times as many as independence would give. A city and its
    postcodes, a street and its postcode. Only places: a surname and an address go together too,
    but that is a household, which the household class models."""
    k = sampled.shape[1]
    out = np.zeros((k, k), dtype=bool)
    present = sampled > 0
    exact = sampled == 1
    others = [j for j in range(k) if not places[j]]
    strangers = ~exact[:, others].any(axis=1) if others else np.ones(len(sampled), dtype=bool)
    present &= strangers[:, None]
    for a in range(k):
        for b in range(a + 1, k):
            if not (places[a] and places[b]):
                continue
            both = present[:, a] & present[:, b]
            n = int(both.sum())
            if not n:
                continue
            pa, pb = exact[both, a].mean(), exact[both, b].mean()
            together = int((exact[both, a] & exact[both, b]).sum())
            if together >= min_pairs and together >= min_lift * n * pa * pb:
                out[a, b] = out[b, a] = True
    return out


def training_sessions(patterns: np.ndarray, masks: np.ndarray, counts: np.ndarray, n_sessions: int):
    """EM's sessions from the candidates' (level pattern, sessions) counts (blocking.agreement_masks):
    session r holds every candidate pair in rule r's blocks, whichever rule produced it (as Splink
    trains one EM session per blocking rule). Within a session the comparisons of the columns it
    selects on are left out; the others are a fair sample of its matches and non-matches. Returns
    the session-expanded patterns, session index, counts and the row of each in the input."""
    rows = [np.flatnonzero((masks >> s) & 1) for s in range(n_sessions)]
    session = np.concatenate([np.full(len(x), s, dtype=np.int64) for s, x in enumerate(rows)])
    rows = np.concatenate(rows).astype(np.int64)
    return patterns[rows], session, counts[rows], rows


def _recalls(design: TrainingDesign, weight: np.ndarray, session: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Per rule: the share of a class's pairs (weights per session row) that the rule finds (that
    share its key, in a block or a refined one), measured in the sessions independent of it (NaN
    where none is, or they hold under 10 of the class's pairs)."""
    n = len(design.rules)
    out = np.full(n, np.nan)
    for r in range(n):
        rows = design.independent_sessions(r)[session]
        total = weight[rows].sum()
        if total >= 10.0:
            found = (((masks >> r) | (masks >> (n + r))) & 1) == 1
            out[r] = weight[rows & found].sum() / total
    return out


def population_rate(found: np.ndarray, recall: np.ndarray, population: float) -> tuple[float, list]:
    """A class's share among all pairs from the pairs of it each rule finds (`found`: the rule's
    class share times its pairs) and each rule's recall: the pairs of the class in the population
    are sum(found) / sum(recall) over the rules whose recall was measured (the ratio estimator: a
    rule weighs by how much of the class it sees, so a rule that sees 0.3% of the households
    cannot multiply the 3 pairs it mistook for them by 300). Without any measured recall, the rule
    finding the most gives a lower bound. Also returns each rule's own estimate, for the report."""
    measured = ~np.isnan(recall) & (recall > 0)
    estimates = np.where(measured, found / np.where(measured, recall, 1.0), np.nan)
    if measured.any() and recall[measured].sum() > 1e-6:
        total = float(found[measured].sum() / recall[measured].sum())
    else:
        total = float(found.max(initial=0.0))
    return float(np.clip(total / max(population, 1.0), 1e-12, 0.5)), estimates.tolist()


def train_model(prepared: list[PreparedComparison], levels, masks, labels: np.ndarray, active: np.ndarray,
                options: ModelOptions, design: TrainingDesign, backend: Backend = CPU, counts=None,
                n_candidates: int | None = None, scope: PairScope | None = None) -> FSModel:
    """u by random sampling, m warm-started from deterministic persons, then EM over one session
    per blocking rule for m, the household class and each session's class shares, then the class
    shares among all pairs (resolver/matching/model.py). The model scores every pair alike, whichever rule
    found it: a global prior and every comparison.

    `prepared`, `levels` and `masks` (per pair, the rules whose keys it shares) live in the
    backend's array module; the samples are drawn on the host (one seeded generator for every
    backend), compared by the backend, and EM runs on the host over the distinct level patterns,
    so every backend trains the identical model. `counts`: the (pattern, mask) counts of the
    candidates when already summed (the dask engine's tasks, or pairs made bucket by bucket: then
    `levels` and `masks` may be None, and `n_candidates` counts the pairs). With a `scope`
    (link_only / dedupe_only), u and the population of pairs are the pairs it allows."""
    started = time.perf_counter()
    xp = backend.xp
    rules = design.rules
    n_rules = len(rules)

    def compare_on_backend(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return to_host(comparison_matrix(prepared, xp.asarray(a), xp.asarray(b), backend.kernels))

    groups = None if scope is None else to_host(scope.groups)
    ra, rb = random_pairs(active, options.u_sample_pairs, options.seed, groups,
                          "link_and_dedupe" if scope is None else scope.link_type)
    sampled = compare_on_backend(ra, rb)
    u_random = [level_distribution(sampled[:, k], p.n_levels) for k, p in enumerate(prepared)]
    da, db = same_person_pairs(labels, active, DET_SAMPLE_PAIRS, options.seed)
    known = compare_on_backend(da, db)
    m0 = []
    for k, p in enumerate(prepared):
        if set(p.config.columns) & design.biased:
            known[:, k] = 0  # selected on it: no evidence about m
        start = default_m(p.labels)
        if int((known[:, k] > 0).sum()) >= 100:  # a warm start from the deterministic persons
            start = 0.8 * level_distribution(known[:, k], p.n_levels) + 0.2 * start
        m0.append(monotone(floored(start, M_FLOOR), u_random[k]))
    total_pairs = max(allowed_pairs(active, scope), 1)
    det_pairs = _within_person_pairs(labels, active, scope)
    n_candidates = len(levels) if levels is not None else n_candidates
    patterns, masks, counts = counts if counts is not None else pattern_counts(levels, masks)
    known_patterns, _, known_counts = pattern_counts(known)
    n_sessions = design.n_sessions
    s_patterns, session, s_counts, s_rows = training_sessions(patterns, masks.astype(np.int64), counts, n_sessions)
    session_pairs = np.bincount(session, weights=s_counts, minlength=n_sessions)
    design.associated = associated_places(sampled, design.places)
    silent = design.selected() | (session_pairs == 0)[:, None]  # what a session cannot learn from
    household = options.households and any(design.household_fields) and not all(design.household_fields)
    h0 = [m0[k].copy() if household and shared else None for k, shared in enumerate(design.household_fields)]
    u = [np.tile(x, (n_sessions, 1)) for x in u_random]
    fit = fit_em(s_patterns, session, s_counts, silent, m0, u, np.full(n_sessions, 0.1), options.max_iterations,
                 options.tolerance, known=(known_patterns, known_counts) if design.labelled else None,
                 h0=h0 if household else None,
                 household_rate0=np.full(n_sessions, 0.05) if household else None, monotone_against=u_random,
                 rate_pseudo_pairs=RATE_PSEUDO_PAIRS, h_reference=u_random)
    unlearned = [prepared[k].name for k in range(len(prepared)) if silent[:, k].all()]
    w_m, w_h, _ = class_posteriors(s_patterns, session, silent, fit.m, fit.h, u, fit.match_rate, fit.household_rate)
    s_masks = masks.astype(np.int64)[s_rows]
    population = max(total_pairs - det_pairs, 1)

    def per_rule(values: np.ndarray) -> np.ndarray:  # a rule's blocks and its refined blocks together
        return values[:n_rules] + values[n_rules:]

    match_recall = _recalls(design, w_m * s_counts, session, s_masks)
    match_rate, match_estimates = population_rate(per_rule(fit.match_rate * session_pairs), match_recall, population)
    household_rate = None
    if household:
        household_recall = _recalls(design, w_h * s_counts, session, s_masks)
        household_rate, household_estimates = population_rate(per_rule(fit.household_rate * session_pairs),
                                                              household_recall, population)
    comparisons = [
        ComparisonModel(p.name, p.config.method, p.labels, fit.m[k], u[k][:n_rules], u_random[k], p.config.tf_adjust,
                        fit.h[k], household and design.household_fields[k])
        for k, p in enumerate(prepared)
    ]
    sessions = {}
    for s, name in enumerate(design.session_names()):
        if s >= n_rules and not session_pairs[s]:
            continue  # a rule without refined blocks
        r = s % n_rules
        sessions[name] = {"pairs": int(session_pairs[s]), "match_rate": float(fit.match_rate[s]),
                          **({"household_rate": float(fit.household_rate[s])} if household else {})}
        if s < n_rules:
            sessions[name].update(
                match_recall=None if np.isnan(match_recall[r]) else float(match_recall[r]),
                matches_estimate=None if np.isnan(match_estimates[r]) else float(match_estimates[r]),
                **({"household_recall": None if np.isnan(household_recall[r]) else float(household_recall[r])}
                   if household else {}))
    training = {
        "candidate_pairs": n_candidates,
        "patterns": len(patterns),
        "u_sample_pairs": len(ra),
        "deterministic_pairs": det_pairs,
        "deterministic_sample_pairs": len(da),
        "selection_biased": sorted(design.biased),
        "not_learned": unlearned,
        "associated_comparisons": [[prepared[a].name, prepared[b].name] for a, b in zip(*np.nonzero(design.associated))
                                   if a < b],
        "comparisons_without_values": [p.name for k, p in enumerate(prepared) if not (sampled[:, k] > 0).any()],
        "household_class": household,
        "household_fields": [p.name for p, shared in zip(prepared, design.household_fields) if shared and household],
        "sessions": sessions,
        "match_rate": match_rate,
        "household_rate": household_rate,
        "prior_from_deterministic": det_pairs / total_pairs,
        "iterations": fit.iterations,
        "converged": fit.converged,
        "log_likelihood": fit.log_likelihood,
        "seconds": round(time.perf_counter() - started, 3),
    }
    prior = float((det_pairs + match_rate * population) / total_pairs)
    return FSModel(rules, comparisons, np.zeros((n_rules, len(prepared)), dtype=bool), np.full(n_rules, match_rate),
                   prior, training, np.full(n_rules, household_rate) if household else None)
