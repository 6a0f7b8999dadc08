"""Candidate pairs bucket by bucket, for data whose pairs do not all fit in memory at once.

For each blocking rule the keyed records are split into buckets by their key hash. A block lies
wholly in one bucket, so a bucket's records make exactly that bucket's pairs (skipping pairs an
earlier rule or the deterministic graph already has, as `candidate_pairs` does): every candidate
pair is made in exactly one bucket. A bucket job carries just its records' keys, labels and
comparison data, renumbered from 0, so it can run in this process or as a task on a cluster.

Candidate pairs grow faster than records (blocks grow with the population: 4.0M pairs for 1.08M
records, 49k for 108k), so at scale a run does not hold them all. Pairs are made and compared
twice instead: once for EM's sufficient statistics (counts of level patterns), and once, with the
trained model, to score them and keep only the pairs the outputs show. Both passes put the same
numbers in the same order as holding every pair would.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np

# Jobs run by a mapper: fn over an iterator of argument tuples, results in order (in this process,
# or DaskEngine.map_lazily on a cluster).
Mapper = Callable[[Callable, Iterable[tuple]], list]


ROWS_PER_BUCKET = 500_000  # keyed records per bucket in this process (a bucket's pairs are held at once)


def in_process(fn: Callable, jobs: Iterable[tuple]) -> list:
    return [fn(*job) for job in jobs]


def local_buckets(records: int) -> int:
    return max(1, -(-records // ROWS_PER_BUCKET))


def bucket_jobs(keys: np.ndarray, labels: np.ndarray, prepared: list, buckets: int,
                scope=None) -> Iterator[tuple]:
    """(rows, keys, labels, rule, prepared, scope) for every rule's buckets: the keyed records whose
    block key falls in the bucket (in position order), with just their keys, labels, comparison
    data and pair scope (blocking.PairScope: link_only / dedupe_only groups; None: every pair).
    Made one at a time: only the jobs being run exist."""
    for rule in range(len(keys)):
        rule_keys = keys[rule]
        keyed = np.flatnonzero(rule_keys != 0)
        bucket = (rule_keys[keyed] % np.uint64(buckets)).astype(np.int64)
        order = np.argsort(bucket, kind="stable")  # stable: positions stay ascending in a bucket
        bounds = np.searchsorted(bucket[order], np.arange(buckets + 1))
        for b in range(buckets):
            rows = keyed[order[bounds[b]:bounds[b + 1]]]
            yield (rows, np.ascontiguousarray(keys[:, rows]), labels[rows], rule, [p.take(rows) for p in prepared],
                   scope.take(rows) if scope is not None else None)


def _pairs_and_levels(keys: np.ndarray, labels: np.ndarray, rule: int, prepared: list, scope=None):
    from resolver.matching.blocking import rule_pairs_of
    from resolver.matching.compare import comparison_matrix

    left, right = rule_pairs_of(keys, rule, labels, scope)
    return left, right, comparison_matrix(prepared, left, right)


def _session_counts(keys: np.ndarray, left: np.ndarray, right: np.ndarray, levels: np.ndarray):
    """EM's statistics of some pairs: counts of (level pattern, rules whose keys they share)."""
    from resolver.matching.blocking import agreement_masks
    from resolver.matching.model import pattern_counts

    return pattern_counts(levels, agreement_masks(keys, left, right))


def bucket_pairs(rows: np.ndarray, keys: np.ndarray, labels: np.ndarray, rule: int, prepared: list, scope=None):
    """One bucket's pairs (record positions), their comparison levels and level-pattern counts."""
    left, right, levels = _pairs_and_levels(keys, labels, rule, prepared, scope)
    counts = _session_counts(keys, left, right, levels)
    return rows[left].astype(np.int32), rows[right].astype(np.int32), levels, counts


def bucket_statistics(rows: np.ndarray, keys: np.ndarray, labels: np.ndarray, rule: int, prepared: list,
                      scope=None):
    """One bucket's pair count and level-pattern counts (the pairs themselves are dropped)."""
    left, right, levels = _pairs_and_levels(keys, labels, rule, prepared, scope)
    return len(left), _session_counts(keys, left, right, levels)


def bucket_scored(rows: np.ndarray, keys: np.ndarray, labels: np.ndarray, rule: int, prepared: list, model,
                  keep_from: float, scope=None):
    """One bucket's pairs scored with `model`: those with probability >= keep_from (record positions,
    levels, weight, probability, tf adjustments) and the histogram of every pair's weight."""
    from resolver.matching.blocking import CandidatePairs
    from resolver.matching.match import WEIGHT_BINS, score_pairs

    left, right, levels = _pairs_and_levels(keys, labels, rule, prepared, scope)
    histogram = np.zeros(len(WEIGHT_BINS) - 1, dtype=np.int64)
    pairs = CandidatePairs(left, right, np.full(len(left), rule, dtype=np.int8), [])
    kept, weight, probability, tf = score_pairs(model, prepared, levels, pairs, keep_from, histogram)
    return (rows[left[kept]].astype(np.int64), rows[right[kept]].astype(np.int64), levels[kept], weight, probability,
            tf, histogram, rule, len(left))


def candidate_order(keys: np.ndarray, rule: np.ndarray, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """The order `candidate_pairs` makes pairs in, for pairs gathered from buckets: by rule, then
    block key, then row-major inside the block."""
    block = keys[rule.astype(np.int64), left] if len(left) else np.zeros(0, np.uint64)
    return np.lexsort((right, left, block, rule))


@dataclass
class ScoredPairs:
    """The pairs kept for output, in the order of all candidate pairs (rule, block key, left,
    right), and what the summary says of all of them."""

    left: np.ndarray
    right: np.ndarray
    rule: np.ndarray
    levels: np.ndarray
    weight: np.ndarray
    probability: np.ndarray
    tf: np.ndarray
    histogram: np.ndarray
    per_rule: list[int]  # candidate pairs of each rule, kept or not


def pattern_statistics(mapper: Mapper, keys: np.ndarray, labels: np.ndarray, prepared: list, buckets: int,
                       scope=None):
    """First pass: (pairs per rule, EM's level-pattern counts summed over the buckets)."""
    from resolver.matching.model import merge_pattern_counts

    rules: list[int] = []

    def jobs():
        for job in bucket_jobs(keys, labels, prepared, buckets, scope):
            rules.append(job[3])
            yield job

    done = mapper(bucket_statistics, jobs())
    per_rule = np.zeros(len(keys), dtype=np.int64)
    np.add.at(per_rule, np.asarray(rules, dtype=np.int64), np.asarray([d[0] for d in done], dtype=np.int64))
    return per_rule.tolist(), merge_pattern_counts([d[1] for d in done], len(prepared))


def scored_pairs(mapper: Mapper, keys: np.ndarray, labels: np.ndarray, prepared: list, buckets: int, model,
                 keep_from: float, scope=None) -> ScoredPairs:
    """Second pass: every bucket's pairs scored, the kept ones in candidate order."""
    from resolver.matching.match import WEIGHT_BINS

    jobs = ((*job[:5], model, keep_from, job[5]) for job in bucket_jobs(keys, labels, prepared, buckets, scope))
    done = mapper(bucket_scored, jobs)
    histogram = np.sum([d[6] for d in done], axis=0) if done else np.zeros(len(WEIGHT_BINS) - 1, dtype=np.int64)
    per_rule = np.zeros(len(keys), dtype=np.int64)
    for d in done:
        per_rule[d[7]] += d[8]
    kept = [d for d in done if len(d[0])]
    if not kept:
        return ScoredPairs(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int8),
                           np.zeros((0, len(prepared)), np.int8), np.zeros(0), np.zeros(0),
                           np.zeros((0, len(prepared))), histogram, per_rule.tolist())
    left, right, levels, weight, probability, tf = (np.concatenate([d[i] for d in kept]) for i in range(6))
    rule = np.concatenate([np.full(len(d[0]), d[7], dtype=np.int8) for d in kept])
    order = candidate_order(keys, rule, left, right)
    return ScoredPairs(left[order], right[order], rule[order], levels[order], weight[order], probability[order],
                       tf[order], histogram, per_rule.tolist())
