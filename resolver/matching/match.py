"""Probabilistic matching, top to bottom: attributes -> blocking -> comparison levels -> model ->
scored pairs and decisions (link, review, no link), with a per-comparison explanation of each.

Runs after the deterministic graph: pairs already in one deterministic person are not compared,
and the accepted links go back into the graph, where the same guards apply to them.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from resolver.matching.attributes import match_attributes
from resolver.compute.backend import CPU, Backend, module_of, to_host
from resolver.matching.blocking import (
    BlockingKeys,
    CandidatePairs,
    PairScope,
    agreement_masks,
    build_blocking_keys,
    candidate_pairs,
    pair_scope,
)
from resolver.matching.compare import PreparedComparison, comparison_matrix, prepare_all
from resolver.config import Config, ModelOptions
from resolver.matching.model import (
    M_FLOOR,
    RATE_PSEUDO_PAIRS,
    ComparisonModel,
    FSModel,
    class_posteriors,
    comparison_weights,
    default_m,
    fit_em,
    floored,
    health_problems,
    household_adjustments,
    kept_comparisons,
    level_distribution,
    model_notes,
    match_weights,
    monotone,
    pattern_counts,
    probabilities,
    random_pairs,
    same_person_pairs,
    tf_adjustments,
)

DECISIONS = ("link", "review", "no_link", "guard_cut")
DET_SAMPLE_PAIRS = 200_000
SCORE_CHUNK = 1_000_000  # pairs scored at a time: each holds ~0.1 GiB of (pairs, comparisons) floats
WEIGHT_BINS = np.arange(-40.0, 41.0, 1.0)  # match-weight histogram of every candidate pair (the run report)


@dataclass
class MatchResult:
    """Scored candidate pairs kept for output (probability >= the lower of review and
    scored_pairs_min), with their levels for explanations."""

    left: np.ndarray  # int64 record positions
    right: np.ndarray
    rule: np.ndarray  # int8 blocking rule index
    probability: np.ndarray
    weight: np.ndarray
    levels: np.ndarray  # (n, K) int8
    tf: np.ndarray  # (n, K) float64 extra bits
    decision: np.ndarray  # int8 index into DECISIONS
    model: FSModel
    blocking: BlockingKeys
    prepared: list[PreparedComparison]
    candidates: int
    summary: dict = field(default_factory=dict)
    cut_type: np.ndarray | None = None  # per pair: type code whose limit cut its link (-1 = none)
    veto: np.ndarray | None = None  # per pair: the must_agree comparison that disagrees (-1 = none)
    attributes: dict | None = None  # the records' attributes in match form (reused by survivorship)
    pair_cache: pd.DataFrame | None = None  # every candidate pair's levels by pair hash (for the state)
    key_cache: pd.DataFrame | None = None  # every record's blocking keys by record hash (for the state)
    steward: np.ndarray | None = None  # per pair: 0, or a review decision applied (resolver.state.review)

    def links(self) -> np.ndarray:
        return np.flatnonzero(self.decision == DECISIONS.index("link"))

    def release_comparison_inputs(self) -> None:
        """Keep only what explanations read of the comparisons (names, level labels, values): their
        per-record codes and encodings, and the attributes, are done with once the pairs are
        scored and the review decisions applied (memory)."""
        self.prepared = [p.for_explanations() for p in self.prepared]
        self.attributes = None

    def release_explanation_inputs(self) -> None:
        """Once the links and the review queue are explained, the comparisons' values are not read
        again (the state takes the model and the caches): they go (memory)."""
        self.prepared = [replace(p, values=p.values.iloc[:0]) for p in self.prepared]

    def decision_counts(self) -> dict[str, int]:
        counts = np.bincount(self.decision, minlength=len(DECISIONS))
        return {d: int(c) for d, c in zip(DECISIONS, counts)}


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------
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
    from resolver.matching.blocking import parse_key

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


# ---------------------------------------------------------------------------------------------
# Scoring and decisions
# ---------------------------------------------------------------------------------------------
def _decide(probability: np.ndarray, auto_merge: float, review: float, vetoed: np.ndarray) -> np.ndarray:
    """link / review / no_link; a vetoed pair at or above auto-merge goes to review instead."""
    link = (probability >= auto_merge) & ~vetoed
    return np.select([link, probability >= review], [0, 1], 2).astype(np.int8)


def vetoes(prepared: list[PreparedComparison], levels: np.ndarray) -> np.ndarray:
    """Per pair: the first must_agree comparison at its "else" level (-1 = none)."""
    out = np.full(len(levels), -1, dtype=np.int64)
    for k in reversed(range(len(prepared))):
        p = prepared[k]
        if p.config.must_agree:
            out[levels[:, k] == p.n_levels - 1] = k
    return out


@dataclass
class Reuse:
    """What an incremental run takes from the state: the model, and the levels of pairs compared
    before (valid while both records' compared attributes are unchanged)."""

    model: dict | None
    pairs: pd.DataFrame | None  # pair_hash (sorted), level columns l0..
    keys: pd.DataFrame | None = None  # record_hash (sorted), blocking key columns k0.. (before caps)


def fingerprints(attributes: dict[str, pd.Series], columns: list[str]) -> np.ndarray:
    """Per record, a 64-bit hash of the named attributes (in match form)."""
    from resolver.kernels.hashing import hash_strings

    out = np.zeros(len(next(iter(attributes.values()))) if attributes else 0, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for column in columns:
            text = attributes[column].astype("str")
            hashed = hash_strings(pa.array(text.array, type=pa.large_string()), prefix=f"{column}=".encode())
            out = (out * np.uint64(0x100000001B3)) ^ hashed
    return out


def pair_hashes(left: np.ndarray, right: np.ndarray, member_keys: np.ndarray, prints: np.ndarray) -> np.ndarray:
    """One 64-bit hash per pair of records, of both records' member keys and attribute fingerprints
    (order-free): equal only when the same two records are compared on the same values."""
    from resolver.kernels.hashing import mix64

    with np.errstate(over="ignore"):
        a = mix64(member_keys[left] ^ (prints[left] * np.uint64(0x9E3779B97F4A7C15)))
        b = mix64(member_keys[right] ^ (prints[right] * np.uint64(0x9E3779B97F4A7C15)))
        return mix64(np.minimum(a, b) * np.uint64(0xC2B2AE3D27D4EB4F) + np.maximum(a, b))


def _reused_keys(stored: pd.DataFrame, record_hashes: np.ndarray, n_rules: int) -> tuple[np.ndarray, np.ndarray]:
    """Blocking keys of the records the state keyed before with the same attributes: a mask of
    those records, and (n_rules, n) keys (zero elsewhere)."""
    keys = np.zeros((n_rules, len(record_hashes)), dtype=np.uint64)
    known = np.zeros(len(record_hashes), dtype=bool)
    table = stored["record_hash"].to_numpy(np.uint64)
    if not len(table) or not len(record_hashes):
        return known, keys
    at = np.minimum(np.searchsorted(table, record_hashes), len(table) - 1)
    known = table[at] == record_hashes
    for r in range(n_rules):
        keys[r, known] = stored[f"k{r}"].to_numpy(np.uint64)[at[known]]
    return known, keys


def _reused_levels(reuse: Reuse, current: np.ndarray, n_comparisons: int) -> tuple[np.ndarray, np.ndarray]:
    """Levels of the candidate pairs the state compared before on the same values (`current`: the
    pairs' hashes; the state's pairs are sorted by hash), and which pairs those are."""
    levels = np.zeros((len(current), n_comparisons), dtype=np.int8)
    found = np.zeros(len(current), dtype=bool)
    if reuse.pairs is None or not len(reuse.pairs) or not len(current):
        return levels, found
    stored = reuse.pairs["pair_hash"].to_numpy(np.uint64)
    stored_levels = reuse.pairs[[f"l{k}" for k in range(n_comparisons)]].to_numpy(np.int8)
    by_hash = np.argsort(current, kind="stable")  # sorted queries: a cache-friendly binary search
    at = np.minimum(np.searchsorted(stored, current[by_hash]), len(stored) - 1)
    hit = stored[at] == current[by_hash]
    found[by_hash[hit]] = True
    levels[by_hash[hit]] = stored_levels[at[hit]]
    return levels, found


def match_records(records: pd.DataFrame, labels: np.ndarray, config: Config, model_path: Path | None = None,
                  stage=None, backend: Backend = CPU, reuse: Reuse | None = None,
                  member_keys: np.ndarray | None = None, attributes: dict[str, pd.Series] | None = None) -> MatchResult:
    """Score the candidate pairs of the active records; `labels` are the deterministic persons.

    On a GPU backend the pairs, their levels and their scores stay on the device from blocking to
    scoring; only the pairs kept for output (and EM's level patterns) come back to the host."""
    matching = config.matching
    timer = stage or _no_stage
    xp = backend.xp
    active = ~records["is_deleted"].to_numpy(bool)
    with timer("match:attributes", rows_in=len(records)):
        if attributes is None:
            attributes = match_attributes(records, config)
        prepared = prepare_all(matching.comparisons, attributes)
        on_backend = [p.on(xp) for p in prepared]
    record_hashes = known = known_keys = None
    if member_keys is not None:  # who each record is and what it holds: its blocking keys follow
        from resolver.kernels.hashing import mix64

        with np.errstate(over="ignore"):
            record_hashes = mix64(member_keys ^ (fingerprints(attributes, list(attributes)) * np.uint64(0x9E3779B97F4A7C15)))
        if reuse is not None and reuse.keys is not None:
            known, known_keys = _reused_keys(reuse.keys, record_hashes, len(matching.blocking.rules))
    from resolver.compute import dask_engine

    engine = dask_engine.active() if not backend.on_gpu_path else None
    summed_counts = None
    scope = pair_scope(matching.link_type, records["source"])  # link_only / dedupe_only: which pairs may be made
    with timer("match:blocking", rows_in=int(active.sum())) as entry:
        blocking = build_blocking_keys(matching.blocking, attributes, active, backend=backend, known=known,
                                       known_keys=known_keys, scope=scope)
        entry["keyed_again"] = int(len(records) if known is None else (~known).sum())
        streamed = _streams(matching, blocking, backend, member_keys, reuse)
        if streamed:  # too many to hold: made bucket by bucket in the passes of _streamed_match
            pairs = None
        elif engine is not None:  # pairs made and compared bucket by bucket on the cluster
            pairs, engine_levels, summed_counts = dask_engine.pairs_and_levels(
                engine, blocking.keys, labels[: len(records)], prepared, [r.name for r in matching.blocking.rules],
                scope)
        else:
            pairs: CandidatePairs = candidate_pairs(blocking, labels[: len(records)], backend, scope)
        entry["rows_out"] = None if streamed else len(pairs)
    if streamed:
        blocking.raw_keys = None
        return _streamed_match(config, blocking, labels[: len(records)], active, prepared, model_path, engine, timer,
                               attributes, scope)
    key_cache = None
    if record_hashes is not None:
        by_record = np.argsort(record_hashes, kind="stable")
        key_cache = pd.DataFrame({"record_hash": record_hashes[by_record],
                                  **{f"k{r}": blocking.raw_keys[r][by_record] for r in range(len(blocking.rules))}})
    blocking.raw_keys = None  # only the state's key cache reads them (memory)
    hashes = None
    if member_keys is not None:
        left, right = to_host(pairs.left), to_host(pairs.right)
        compared = list(dict.fromkeys(c for p in prepared for c in p.config.columns))
        hashes = pair_hashes(left, right, member_keys, fingerprints(attributes, compared))
    with timer("match:compare", rows_in=len(pairs)) as entry:
        if engine is not None:
            levels, compared = engine_levels, len(pairs)
        elif reuse is not None and not backend.on_gpu_path:  # incremental: compare only what changed
            levels, found = _reused_levels(reuse, hashes, len(prepared))
            todo = np.flatnonzero(~found)
            levels[todo] = comparison_matrix(prepared, pairs.left[todo], pairs.right[todo])
            compared = len(todo)
        else:
            levels = comparison_matrix(on_backend, pairs.left, pairs.right, backend.kernels)
            compared = len(pairs)
        entry["rows_out"] = compared
    rules = [r.name for r in matching.blocking.rules]
    with timer("match:train"):
        if model_path is not None:
            model = _loaded_model(model_path, prepared, rules)
        elif reuse is not None and reuse.model is not None:
            model = FSModel.from_dict(reuse.model, prepared, rules, "the state's model.json")
            model.training = {**model.training, "loaded_from": "state"}
        else:
            masks = None if summed_counts is not None else \
                agreement_masks(xp.asarray(blocking.keys), pairs.left.astype(xp.int64), pairs.right.astype(xp.int64))
            model = train_model(on_backend, levels, masks, labels[: len(records)], active, matching.model,
                                TrainingDesign.of(config, prepared), backend, counts=summed_counts, scope=scope)
    with timer("match:score", rows_in=len(pairs)) as entry:
        histogram = np.zeros(len(WEIGHT_BINS) - 1, dtype=np.int64)
        rows, weight, probability, tf = score_pairs(model, on_backend, levels, pairs,
                                                    min(matching.scored_pairs_min, matching.thresholds.review), histogram)
        entry["rows_out"] = len(rows)
    device_rows = xp.asarray(rows)
    result = MatchResult(
        left=to_host(pairs.left[device_rows]).astype(np.int64), right=to_host(pairs.right[device_rows]).astype(np.int64),
        rule=to_host(pairs.rule[device_rows]), probability=probability, weight=weight,
        levels=to_host(levels[device_rows]), tf=tf, decision=np.zeros(len(rows), np.int8), model=model,
        blocking=blocking, prepared=prepared, candidates=len(pairs), attributes=attributes,
    )
    _decide_and_summarize(result, config, pairs.per_rule, compared, histogram)
    result.key_cache = key_cache
    if hashes is not None:  # what the next incremental run may reuse, sorted by pair hash
        by_hash = np.argsort(hashes, kind="stable")
        host_levels = to_host(levels)[by_hash]
        result.pair_cache = pd.DataFrame({"pair_hash": hashes[by_hash],
                                          **{f"l{k}": host_levels[:, k] for k in range(len(prepared))}})
    return result


def _loaded_model(model_path: Path, prepared: list[PreparedComparison], rules: list[str]) -> FSModel:
    model = FSModel.load(model_path, prepared, rules)
    model.training = {**model.training, "loaded_from": str(model_path)}
    return model


def _decide_and_summarize(result: MatchResult, config: Config, per_rule, compared: int, histogram: np.ndarray) -> None:
    """Vetoes, decisions and the summary of scored pairs, `compared` of the result's candidates
    compared in this run (the others' levels came from the state)."""
    thresholds = config.matching.thresholds
    result.veto = vetoes(result.prepared, result.levels)
    result.decision = _decide(result.probability, thresholds.auto_merge, thresholds.review, result.veto >= 0)
    health = model_health(result.model, config)
    if health["auto_merge_withheld"]:  # an unfit model merges nothing on its own: its links wait for review
        result.decision[result.decision == DECISIONS.index("link")] = DECISIONS.index("review")
    result.summary = _summary(result, result.candidates, per_rule, config)
    result.summary["model_health"] = health
    result.summary["pairs_compared"] = compared
    result.summary["pairs_reused"] = result.candidates - compared
    result.summary["weight_histogram"] = {"edges": WEIGHT_BINS.tolist(), "counts": histogram.tolist()}


def model_health(model: FSModel, config: Config) -> dict:
    """The training health check (resolver.matching.model.health_problems) and what it means for this run:
    with problems, no automatic merge unless matching.model.allow_unhealthy."""
    options = config.matching.model
    problems = health_problems(model, config.matching.thresholds.auto_merge)
    return {"ok": not problems, "problems": problems, "notes": model_notes(model),
            "auto_merge_withheld": bool(problems) and not options.allow_unhealthy}


def _streams(matching, blocking, backend: Backend, member_keys, reuse) -> bool:
    """Make pairs bucket by bucket, never holding them all, when the blocks hold more than
    `matching.stream_above_pairs` pairs, on the CPU, without a state (whose caches keep every
    pair's hash and levels)."""
    return (member_keys is None and reuse is None and not backend.on_gpu_path
            and sum(p.pairs for p in blocking.plans) > matching.stream_above_pairs)


def _streamed_match(config: Config, blocking, labels: np.ndarray, active: np.ndarray, prepared: list,
                    model_path: Path | None, engine, timer, attributes, scope=None) -> MatchResult:
    """match_records for pairs that do not fit in memory together (resolver.matching.pairs): a
    first pass sums EM's statistics bucket by bucket (none when the model is loaded), a second
    scores every bucket's pairs with the trained model and keeps those the outputs show. The
    result is the one holding every pair gives."""
    from resolver.matching import pairs as pair_buckets

    matching = config.matching
    rules = [r.name for r in matching.blocking.rules]
    labels = np.asarray(labels, dtype=np.int64)
    keys = blocking.keys
    if engine is not None:
        mapper, buckets = engine.map_lazily, engine.buckets_for(keys.shape[1])
        engine.description["pair_buckets"] = buckets
    else:
        mapper, buckets = pair_buckets.in_process, pair_buckets.local_buckets(keys.shape[1])
    with timer("match:compare") as entry:
        if model_path is None:
            per_rule, counts = pair_buckets.pattern_statistics(mapper, keys, labels, prepared, buckets, scope)
            entry["rows_out"] = sum(per_rule)
    with timer("match:train"):
        if model_path is not None:
            model = _loaded_model(model_path, prepared, rules)
        else:
            model = train_model(prepared, None, None, labels, active, matching.model,
                                TrainingDesign.of(config, prepared), counts=counts, n_candidates=sum(per_rule),
                                scope=scope)
    with timer("match:score") as entry:
        keep_from = min(matching.scored_pairs_min, matching.thresholds.review)
        scored = pair_buckets.scored_pairs(mapper, keys, labels, prepared, buckets, model, keep_from, scope)
        entry["rows_in"], entry["rows_out"] = sum(scored.per_rule), len(scored.left)
    candidates = sum(scored.per_rule)
    result = MatchResult(
        left=scored.left, right=scored.right, rule=scored.rule, probability=scored.probability, weight=scored.weight,
        levels=scored.levels, tf=scored.tf, decision=np.zeros(len(scored.left), np.int8), model=model,
        blocking=blocking, prepared=prepared, candidates=candidates, attributes=attributes,
    )
    _decide_and_summarize(result, config, scored.per_rule, candidates, scored.histogram)
    result.summary["streamed"] = {"buckets": buckets, "passes": 1 if model_path is not None else 2}
    return result


def score_pairs(model: FSModel, prepared: list[PreparedComparison], levels, pairs: CandidatePairs, keep_from: float,
                histogram: np.ndarray | None = None):
    """Weights and probabilities of all candidate pairs (in chunks, in the pairs' array module);
    returns, on the host, the rows with probability >= keep_from and their weight, probability, tf.
    With `histogram`, adds every pair's match weight to it (bins WEIGHT_BINS, the ends open)."""
    xp = module_of(levels)
    edges = xp.asarray(WEIGHT_BINS)
    kept = []
    for start in range(0, len(pairs), SCORE_CHUNK):
        chunk = slice(start, start + SCORE_CHUNK)
        left = pairs.left[chunk].astype(xp.int64)
        rule = pairs.rule[chunk].astype(xp.int64)
        keep = kept_comparisons(model, levels[chunk], rule)  # once a chunk, for the tf and the weights
        tf = tf_adjustments(model, prepared, levels[chunk], rule, left, keep)
        weight = match_weights(model, levels[chunk], rule, tf, keep)
        probability = probabilities(weight)
        if histogram is not None:
            clipped = xp.clip(weight, float(WEIGHT_BINS[0]), float(WEIGHT_BINS[-1]))
            histogram += to_host(xp.histogram(clipped, bins=edges)[0]).astype(np.int64)
        rows = xp.flatnonzero(probability >= keep_from)
        kept.append(tuple(map(to_host, (start + rows, weight[rows], probability[rows], tf[rows]))))
    if not kept:
        return np.zeros(0, np.int64), np.zeros(0), np.zeros(0), np.zeros((0, len(prepared)))
    return tuple(np.concatenate([k[i] for k in kept]) for i in range(4))


def _summary(result: MatchResult, candidates: int, per_rule: list[int], config: Config) -> dict:
    matching = config.matching
    return {
        "link_type": matching.link_type,
        "candidate_pairs": candidates,
        "pairs_per_rule": dict(zip(result.blocking.rules, per_rule)),
        "blocking_plan": [
            {"rule": p.name, "keyed_records": p.keyed_records, "blocks": p.blocks, "pairs_in_blocks": p.pairs,
             "capped_blocks": p.capped_blocks, "capped_records": p.capped_records, "capped_pairs": p.capped_pairs,
             "refined_blocks": p.refined_blocks, "refined_pairs": p.refined_pairs, "refine_missing": p.refine_missing}
            for p in result.blocking.plans
        ],
        "blocking_warnings": result.blocking.warnings(matching.blocking.max_block_size),
        "thresholds": {"auto_merge": matching.thresholds.auto_merge, "review": matching.thresholds.review},
        "decisions": result.decision_counts(),
        "model": result.model.training,
        "match_rate_by_rule": dict(zip(result.model.rules, map(float, result.model.match_rate))),
        "prior": result.model.prior,
    }


@contextmanager
def _no_stage(name: str, rows_in: int | None = None):
    """Stand-in for StageLog.stage when matching runs outside a pipeline."""
    yield {}


# ---------------------------------------------------------------------------------------------
# Explanations
# ---------------------------------------------------------------------------------------------
def explain(result: MatchResult, rows: np.ndarray, records: pd.DataFrame, person_ids: pd.Series,
            reasons: np.ndarray | None = None) -> pd.DataFrame:
    """One row per pair: both records, the probability, and for each comparison both values, the
    level and its weight (the waterfall: prior_weight + the weights + household_weight = match_weight)."""
    left, right = result.left[rows], result.right[rows]

    def take(column: pd.Series, at: np.ndarray):
        # Row selection first: turning a whole Arrow-backed column into Python objects costs seconds.
        return column.take(at).to_numpy()

    frame = pd.DataFrame(
        {
            "record_id_l": left,
            "source_l": take(records["source"], left),
            "record_key_l": take(records["record_key"], left),
            "person_id_l": take(person_ids, left),
            "record_id_r": right,
            "source_r": take(records["source"], right),
            "record_key_r": take(records["record_key"], right),
            "person_id_r": take(person_ids, right),
            "probability": result.probability[rows],
            "match_weight": result.weight[rows],
            "decision": pd.Categorical.from_codes(result.decision[rows], categories=list(DECISIONS)),
            "reason": reasons if reasons is not None else "",
            "blocking_rule": np.asarray(result.blocking.rules, dtype=object)[result.rule[rows]],
            "prior_weight": result.model.prior_weights[result.rule[rows].astype(np.int64)],
            "household_weight": household_adjustments(result.model, result.levels[rows],
                                                      result.rule[rows].astype(np.int64), result.tf[rows]),
        }
    )
    weights = comparison_weights(result.model, result.levels[rows], result.rule[rows].astype(np.int64))
    for k, p in enumerate(result.prepared):
        level = result.levels[rows, k]
        frame[f"{p.name}_l"] = take(p.values, left)
        frame[f"{p.name}_r"] = take(p.values, right)
        frame[f"{p.name}_level"] = pd.Categorical.from_codes(level.astype(np.int64), categories=p.labels)
        frame[f"{p.name}_weight"] = weights[:, k] + result.tf[rows, k]
    return frame
