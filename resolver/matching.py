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

from resolver.attributes import match_attributes
from resolver.backend.arrays import CPU, Backend, module_of, to_host
from resolver.blocking import (
    BlockingKeys,
    CandidatePairs,
    build_blocking_keys,
    candidate_pairs,
    pair_scope,
)
from resolver.compare import PreparedComparison, comparison_matrix, prepare_all
from resolver.config import Config, ModelOptions
from resolver.model import (
    M_FLOOR,
    ComparisonModel,
    FSModel,
    candidate_u,
    comparison_weights,
    default_m,
    expectation_maximisation,
    floored,
    level_distribution,
    match_weights,
    pattern_counts,
    probabilities,
    random_pairs,
    same_person_pairs,
    tf_adjustments,
    training_warnings,
    without_matches,
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
    steward: np.ndarray | None = None  # per pair: 0, or a review decision applied (resolver.review)

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
def _within_person_pairs(labels: np.ndarray, active: np.ndarray) -> int:
    sizes = np.bincount(labels[active]) if active.any() else np.zeros(0, np.int64)
    return int((sizes * (sizes - 1) // 2).sum())


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


def neutral_comparisons(config: Config, prepared: list[PreparedComparison]) -> np.ndarray:
    """(n_rules, n_comparisons): a comparison of a column the rule blocks on as-is tells nothing
    about its pairs (they all agree there, matches and non-matches alike)."""
    from resolver.blocking import parse_key

    rules = config.matching.blocking.rules
    out = np.zeros((len(rules), len(prepared)), dtype=bool)
    for r, rule in enumerate(rules):
        plain = {parse_key(k).columns[0] for k in rule.keys if parse_key(k).function is None}
        for k, p in enumerate(prepared):
            out[r, k] = p.config.method != "geo" and p.config.columns[0] in plain
    return out


def train_model(prepared: list[PreparedComparison], levels, rule, labels: np.ndarray,
                active: np.ndarray, options: ModelOptions, rules: list[str], neutral: np.ndarray,
                biased: set[str] = frozenset(), backend: Backend = CPU, counts=None,
                n_candidates: int | None = None) -> FSModel:
    """u by random sampling, m anchored on deterministic persons, then EM on the candidates.

    `prepared`, `levels` and `rule` live in the backend's array module; the samples are drawn on
    the host (one seeded generator for every backend), compared by the backend, and EM runs on the
    host over the distinct level patterns, so every backend trains the identical model. `counts`:
    the level-pattern counts of the candidates when already summed (the dask engine's tasks, or
    pairs made bucket by bucket: then `levels` and `rule` may be None, and `n_candidates` counts
    the pairs)."""
    started = time.perf_counter()
    xp = backend.xp

    def compare_on_backend(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return to_host(comparison_matrix(prepared, xp.asarray(a), xp.asarray(b), backend.kernels))

    ra, rb = random_pairs(active, options.u_sample_pairs, options.seed)
    sampled = compare_on_backend(ra, rb)
    u_random = [level_distribution(sampled[:, k], p.n_levels) for k, p in enumerate(prepared)]
    da, db = same_person_pairs(labels, active, DET_SAMPLE_PAIRS, options.seed)
    known = compare_on_backend(da, db)
    m0, fixed = [], []
    for k, p in enumerate(prepared):
        if set(p.config.columns) & biased:
            known[:, k] = 0  # selected on it: no evidence about m
        start = default_m(p.labels)
        labelled = int((known[:, k] > 0).sum())
        if labelled >= 100:
            start = 0.8 * level_distribution(known[:, k], p.n_levels) + 0.2 * start
        # With enough labelled pairs, their m is the estimate: EM on candidates dominated by
        # households would pull it towards "different first name" (pitfall: EM learns households).
        fixed.append(labelled >= options.labelled_m_min_pairs)
        if fixed[-1]:  # floored like EM's m: a moved address must cost bits, not veto the pair
            start = floored(level_distribution(known[:, k], p.n_levels, pseudo=0.5), M_FLOOR)
        m0.append(start)
    n_active = int(active.sum())
    total_pairs = max(n_active * (n_active - 1) // 2, 1)
    det_pairs = _within_person_pairs(labels, active)
    n_candidates = len(levels) if levels is not None else n_candidates
    # The prior from deterministic links: about as many matches remain among the candidates as
    # the deterministic persons already hold (a starting value; EM refines it).
    lambda0 = float(np.clip(det_pairs / max(n_candidates, 1), 1e-4, 0.5))
    patterns, pattern_rule, counts = counts if counts is not None else pattern_counts(levels, rule)
    known_patterns, _, known_counts = pattern_counts(known)
    if options.u_source == "random":
        u = [np.tile(x, (len(rules), 1)) for x in u_random]
    else:
        u = candidate_u(patterns, pattern_rule, counts, len(rules), [p.n_levels for p in prepared])
    def fit(u_start: list[np.ndarray], m_start: list[np.ndarray], lambda_start: np.ndarray):
        return expectation_maximisation(
            patterns, pattern_rule, counts, neutral, m_start, u_start, lambda_start, options.max_iterations,
            options.tolerance, known=(known_patterns, known_counts), fixed_m=fixed,
        )

    m, u, lam, iterations, converged = fit(u, m0, np.full(len(rules), lambda0))
    if options.u_source == "candidates":
        u = without_matches(u, m, lam)
    comparisons = [
        ComparisonModel(p.name, p.config.method, p.labels, m[k], u[k], u_random[k], p.config.tf_adjust)
        for k, p in enumerate(prepared)
    ]
    warnings = training_warnings(comparisons)
    if not converged:
        warnings.append(f"EM did not converge in {iterations} iterations (tolerance {options.tolerance:g})")
    if rule is not None:
        per_rule = np.bincount(to_host(rule).astype(np.int64), minlength=len(rules))
    else:  # pairs made bucket by bucket: each rule's pairs from the pattern counts
        per_rule = np.bincount(pattern_rule.astype(np.int64), weights=counts, minlength=len(rules)).astype(np.int64)
    prior = float((det_pairs + (lam * per_rule).sum()) / total_pairs)
    training = {
        "candidate_pairs": n_candidates,
        "patterns": len(patterns),
        "u_sample_pairs": len(ra),
        "deterministic_pairs": det_pairs,
        "deterministic_sample_pairs": len(da),
        "selection_biased": sorted(biased),
        "m_from_deterministic_pairs": [p.name for p, f in zip(prepared, fixed) if f],
        "prior_from_deterministic": det_pairs / total_pairs,
        "lambda_start": lambda0,
        "iterations": iterations,
        "converged": converged,
        "u_source": options.u_source,
        "warnings": warnings,
        "seconds": round(time.perf_counter() - started, 3),
    }
    return FSModel(rules, comparisons, neutral, lam, prior, training)


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
    from resolver import dask_engine

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
            model = train_model(on_backend, levels, pairs.rule, labels[: len(records)], active, matching.model,
                                rules, neutral_comparisons(config, prepared), selection_biased(config), backend,
                                counts=summed_counts)
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
    result.summary = _summary(result, result.candidates, per_rule, config)
    result.summary["pairs_compared"] = compared
    result.summary["pairs_reused"] = result.candidates - compared
    result.summary["weight_histogram"] = {"edges": WEIGHT_BINS.tolist(), "counts": histogram.tolist()}


def _streams(matching, blocking, backend: Backend, member_keys, reuse) -> bool:
    """Make pairs bucket by bucket, never holding them all, when the blocks hold more than
    `matching.stream_above_pairs` pairs, on the CPU, without a state (whose caches keep every
    pair's hash and levels)."""
    return (member_keys is None and reuse is None and not backend.on_gpu_path
            and sum(p.pairs for p in blocking.plans) > matching.stream_above_pairs)


def _streamed_match(config: Config, blocking, labels: np.ndarray, active: np.ndarray, prepared: list,
                    model_path: Path | None, engine, timer, attributes, scope=None) -> MatchResult:
    """match_records for pairs that do not fit in memory together (resolver.pair_buckets): a
    first pass sums EM's statistics bucket by bucket (none when the model is loaded), a second
    scores every bucket's pairs with the trained model and keeps those the outputs show. The
    result is the one holding every pair gives."""
    from resolver import pair_buckets

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
            model = train_model(prepared, None, None, labels, active, matching.model, rules,
                                neutral_comparisons(config, prepared), selection_biased(config), counts=counts,
                                n_candidates=sum(per_rule))
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
        tf = tf_adjustments(model, prepared, levels[chunk], rule, left)
        weight = match_weights(model, levels[chunk], rule, tf)
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
    level and its weight (the waterfall: prior_weight + the weights = match_weight)."""
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
