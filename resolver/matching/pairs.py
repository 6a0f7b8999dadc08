"""Candidate pairs, their comparison levels and their scores: one pair source, held or in buckets.

match_records asks a pair source for the same things whatever it is: the pairs it made while
blocking (`made`), the pairs' levels (`compare`), EM's sufficient statistics (`statistics`: the
counts of level patterns, and the candidates), then the scored pairs kept for output (`scored`).
Two implementations:

- `HeldPairs`: every candidate pair and its levels in memory, on the backend's device. The pairs
  are made on the backend (blocking.candidate_pairs; on the host the levels the state compared
  before are reused, a filter before comparing), or made and compared bucket by bucket on the
  engine and gathered (`held_in_buckets`: the dask engine's tasks).
- `StreamedPairs`: pairs too many to hold, made bucket by bucket on the engine, never all held:
  a first pass sums EM's statistics, a second, with the trained model, scores them and keeps only
  the pairs the outputs show. On the local engine the first pass keeps each bucket's pairs and
  levels on disk (15 bytes a pair for seven comparisons) and the second reads them back, so every
  pair is compared once; a cluster's tasks share no disk, so there the second pass compares again.

Buckets: for each blocking rule the keyed records are split into buckets by their key hash (key
mod the bucket count). A block lies wholly in one bucket, so a bucket's records make exactly that
bucket's pairs (skipping pairs an earlier rule or the deterministic graph already has, as
`candidate_pairs` does): every candidate pair is made in exactly one bucket. A bucket job carries
just its records' keys, labels and comparison data, renumbered from 0, so it runs on any engine
(in this process, or as a task on a cluster, sent only its bucket's records). Jobs return their
pairs (or counts), levels and EM statistics; pairs gathered from buckets are put in the order
`candidate_pairs` makes them (rule, block key, left, right), so training and scoring see identical
inputs however the pairs were made.

Candidate pairs grow faster than records (blocks grow with the population: 4.0M pairs for 1.08M
records, 49k for 108k), which is why a run above `matching.stream_above_pairs` streams them.
Which source a run uses is chosen in compute/dispatch.py (keys "pairs" and "streamed_pairs").
"""

from __future__ import annotations

import importlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import pandas as pd

from resolver.compute.backend import Backend, module_of, to_host
from resolver.compute.dispatch import choose
from resolver.compute.engine import Engine
from resolver.matching.blocking import (
    BlockingKeys,
    CandidatePairs,
    PairScope,
    agreement_masks,
    candidate_pairs,
    rule_pairs_of,
    rule_pairs_xp,
)
from resolver.matching.compare import PreparedComparison, comparison_matrix
from resolver.matching.model import (
    FSModel,
    merge_pattern_counts,
    pattern_counts,
)
from resolver.matching.reuse import MatchCaches
from resolver.matching.score import WEIGHT_BINS, ScoringTables, score_pairs


@dataclass
class ScoredPairs:
    """The pairs kept for output, in the order of all candidate pairs (rule, block key, left,
    right), and what the summary says of all of them."""

    left: np.ndarray  # int64 record positions
    right: np.ndarray
    rule: np.ndarray
    levels: np.ndarray
    weight: np.ndarray
    probability: np.ndarray
    tf: np.ndarray
    histogram: np.ndarray
    per_rule: list[int]  # candidate pairs of each rule, kept or not
    compared: int | None = None  # pairs compared in this run (None: every candidate)

    @property
    def candidates(self) -> int:
        return int(sum(self.per_rule))


# ---------------------------------------------------------------------------------------------
# Bucket jobs: any engine runs them
# ---------------------------------------------------------------------------------------------
def bucket_jobs(keys: np.ndarray, labels: np.ndarray, prepared: list, buckets: int,
                scope=None, whole: bool = False) -> Iterator[tuple]:
    """(rows, keys, labels, rule, prepared, scope) for every rule's buckets: the keyed records whose
    block key falls in the bucket (in position order), with just their keys, labels, comparison
    data and pair scope (blocking.PairScope: link_only / dedupe_only groups; None: every pair).
    `whole`: every job gets all the comparison data, untaken (jobs in this process, which index
    it by `rows`: taking it would copy every comparison's data once per rule). Made one at a
    time: only the jobs being run exist."""
    for rule in range(len(keys)):
        rule_keys = keys[rule]
        keyed = np.flatnonzero(rule_keys != 0)
        if buckets == 1:
            order, bounds = np.arange(len(keyed)), [0, len(keyed)]
        else:  # stable: positions stay ascending in a bucket (a radix sort for 16-bit bucket numbers)
            bucket = (rule_keys[keyed] % np.uint64(buckets)).astype(np.int16 if buckets < 2 ** 15 else np.int64)
            order = np.argsort(bucket, kind="stable")
            bounds = np.searchsorted(bucket[order], np.arange(buckets + 1))
        for b in range(buckets):
            rows = keyed[order[bounds[b]:bounds[b + 1]]]
            yield (rows, np.ascontiguousarray(keys[:, rows]), labels[rows], rule,
                   prepared if whole else [p.take(rows) for p in prepared],
                   scope.take(rows) if scope is not None else None)


@dataclass(frozen=True)
class OnDevice:
    """Where bucket jobs make and compare their pairs on a GPU backend: `arrays` names the array
    module ("cupy"; "numpy" when simulated), `target` the kernels' numba target. `prepared`: every
    record's comparison data already on this process's device (the local engine); None on a
    cluster, where each worker moves its bucket's data to its own GPU (dask-cuda)."""

    arrays: str
    target: str
    prepared: list | None = None

    @property
    def where(self) -> str:
        return self.target if self.prepared is not None else "workers' GPUs"

    @property
    def xp(self):
        return importlib.import_module(self.arrays)

    def comparison_data(self, prepared: list) -> list:
        return self.prepared if self.prepared is not None else [p.on(self.xp) for p in prepared]


def _pairs_and_levels(rows: np.ndarray, keys: np.ndarray, labels: np.ndarray, rule: int, prepared: list, scope,
                      whole: bool, device: OnDevice | None = None, count: bool = False):
    """A bucket's pairs (positions in the bucket), their levels and, with `count`, EM's statistics
    of them (else None), returned on the host. `whole`: `prepared` is every record's (bucket_jobs),
    compared at the records' own positions. `device`: the pairs are made (by array operations,
    the same pairs in the same order), compared and counted on a GPU, which holds the bucket's
    keys, labels and comparison data meanwhile; only the results come back."""
    if device is None:
        xp, target, data = np, "cpu", prepared
        left, right = rule_pairs_of(keys, rule, labels, scope)
    else:
        xp, target, data = device.xp, device.target, device.comparison_data(prepared)
        keys = xp.asarray(keys)
        left, right = rule_pairs_xp(xp, keys, rule, xp.asarray(labels), scope=None if scope is None else scope.on(xp))
    at_left, at_right = (xp.asarray(rows)[left], xp.asarray(rows)[right]) if whole else (left, right)
    levels = comparison_matrix(data, at_left, at_right, target)
    counts = _session_counts(keys, left, right, levels) if count else None
    return to_host(left), to_host(right), to_host(levels), counts


def _session_counts(keys: np.ndarray, left: np.ndarray, right: np.ndarray, levels: np.ndarray):
    """EM's statistics of some pairs: counts of (level pattern, rules whose keys they share), on
    the host (reduced where the pairs are)."""
    return pattern_counts(levels, agreement_masks(keys, left, right))


def bucket_pairs(rows: np.ndarray, keys: np.ndarray, labels: np.ndarray, rule: int, prepared: list, scope=None,
                 whole: bool = False, device: OnDevice | None = None):
    """One bucket's pairs (record positions), their comparison levels and level-pattern counts;
    `device`: made, compared and counted on a GPU (_pairs_and_levels)."""
    left, right, levels, counts = _pairs_and_levels(rows, keys, labels, rule, prepared, scope, whole, device, True)
    return rows[left].astype(np.int32), rows[right].astype(np.int32), levels, counts


def _keep_pairs(path: str, left: np.ndarray, right: np.ndarray, levels: np.ndarray) -> None:
    """A bucket's pairs (positions in the bucket) and levels, written for the scoring pass."""
    with open(path, "wb") as f:
        np.savez(f, left=left.astype(np.int32), right=right.astype(np.int32), levels=levels)


def _kept_pairs(path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    with np.load(path) as kept:
        return kept["left"].astype(np.int64), kept["right"].astype(np.int64), kept["levels"]


def bucket_statistics(rows: np.ndarray, keys: np.ndarray, labels: np.ndarray, rule: int, prepared: list,
                      scope=None, keep_at: str | None = None, whole: bool = False,
                      device: OnDevice | None = None):
    """One bucket's pair count and level-pattern counts; the pairs and levels are written to
    `keep_at` when given (for bucket_scored), else dropped. `device`: compared on the GPU
    (_pairs_and_levels)."""
    left, right, levels, counts = _pairs_and_levels(rows, keys, labels, rule, prepared, scope, whole, device, True)
    if keep_at is not None:
        _keep_pairs(keep_at, left, right, levels)
    return len(left), counts


def bucket_scored(rows: np.ndarray, keys: np.ndarray, labels: np.ndarray, rule: int, prepared: list, model,
                  keep_from: float, scope=None, kept_at: str | None = None, whole: bool = False,
                  tables: ScoringTables | None = None, device: OnDevice | None = None):
    """One bucket's pairs scored with `model`: those with probability >= keep_from (record positions,
    levels, weight, probability, tf adjustments) and the histogram of every pair's weight. The
    pairs and levels are read from `kept_at` when bucket_statistics wrote them there (the file is
    then removed), else made and compared here. `tables`: the model's ScoringTables for `prepared`
    when the caller made them once for every bucket (whole). Scoring runs on the host, where
    `prepared` is; `device` compares there (_pairs_and_levels)."""
    if kept_at is not None:
        left, right, levels = _kept_pairs(kept_at)
        os.remove(kept_at)
    else:
        left, right, levels, _ = _pairs_and_levels(rows, keys, labels, rule, prepared, scope, whole, device)
    histogram = np.zeros(len(WEIGHT_BINS) - 1, dtype=np.int64)
    at = (rows[left], rows[right]) if whole else (left, right)  # where `prepared` has the pair's records
    pairs = CandidatePairs(*at, np.full(len(left), rule, dtype=np.int8), [])
    kept, weight, probability, tf = score_pairs(model, prepared, levels, pairs, keep_from, histogram, tables)
    return (rows[left[kept]].astype(np.int64), rows[right[kept]].astype(np.int64), levels[kept], weight, probability,
            tf, histogram, rule, len(left))


def candidate_order(keys: np.ndarray, rule: np.ndarray, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """The order `candidate_pairs` makes pairs in, for pairs gathered from buckets: by rule, then
    block key, then row-major inside the block."""
    block = keys[rule.astype(np.int64), left] if len(left) else np.zeros(0, np.uint64)
    return np.lexsort((right, left, block, rule))


def _numbered_jobs(keys: np.ndarray, labels: np.ndarray, prepared: list, buckets: int, scope,
                   rules: list[int], keep_in: str | None = None, whole: bool = False) -> Iterator[tuple]:
    """bucket_jobs, noting each job's rule in `rules` as it is made; with `keep_in`, each job
    also gets the file its pairs are kept in (_kept_path)."""
    for i, job in enumerate(bucket_jobs(keys, labels, prepared, buckets, scope, whole)):
        rules.append(job[3])
        yield job if keep_in is None else (*job, _kept_path(keep_in, i))


def _in_this_process(engine: Engine) -> bool:
    """Whether the engine runs bucket jobs in this process (the local engine): they may then read
    every record's comparison data in place, and keep files on this disk."""
    return engine.kind == "local"


def _kept_path(folder: str, job: int) -> str:
    return os.path.join(folder, f"bucket-{job}.npz")


def pairs_in_buckets(engine: Engine, keys: np.ndarray, labels: np.ndarray, prepared: list, buckets: int,
                     scope=None, device: OnDevice | None = None) -> tuple[CandidatePairs, np.ndarray, tuple]:
    """Every rule's candidate pairs made and compared bucket by bucket on `engine`, gathered in
    candidate order: the pairs, their levels and EM's statistics summed over the buckets.
    `device`: the jobs compare on a GPU."""
    labels = np.asarray(labels, np.int64)
    task_rules: list[int] = []
    done = engine.map_lazily(bucket_pairs, _numbered_jobs(keys, labels, prepared, buckets, scope, task_rules),
                             device=device)
    if not done:
        left, right, rule = np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(0, np.int8)
        levels = np.zeros((0, len(prepared)), np.int8)
    else:
        left = np.concatenate([d[0] for d in done])
        right = np.concatenate([d[1] for d in done])
        rule = np.concatenate([np.full(len(d[0]), r, dtype=np.int8) for r, d in zip(task_rules, done)])
        levels = np.concatenate([d[2] for d in done])
    order = candidate_order(keys, rule, left, right)
    per_rule = np.bincount(rule.astype(np.int64), minlength=len(keys)).tolist()
    pairs = CandidatePairs(left[order], right[order], rule[order], per_rule)
    return pairs, levels[order], merge_pattern_counts([d[3] for d in done], len(prepared))


def pattern_statistics(engine: Engine, keys: np.ndarray, labels: np.ndarray, prepared: list, buckets: int,
                       scope=None, keep_in: str | None = None, device: OnDevice | None = None):
    """Every bucket's pairs counted (and with `keep_in`, a folder the engine's tasks can write,
    kept there for scored_pairs): (pairs per rule, EM's level-pattern counts summed). `device`:
    the buckets are compared on a GPU."""
    rules: list[int] = []
    whole = _in_this_process(engine)
    done = engine.map_lazily(bucket_statistics, _numbered_jobs(keys, labels, prepared, buckets, scope, rules,
                                                               keep_in, whole), whole=whole, device=device)
    per_rule = np.zeros(len(keys), dtype=np.int64)
    np.add.at(per_rule, np.asarray(rules, dtype=np.int64), np.asarray([d[0] for d in done], dtype=np.int64))
    return per_rule.tolist(), merge_pattern_counts([d[1] for d in done], len(prepared))


def scored_pairs(engine: Engine, keys: np.ndarray, labels: np.ndarray, prepared: list, buckets: int, model,
                 keep_from: float, scope=None, kept_in: str | None = None,
                 device: OnDevice | None = None) -> ScoredPairs:
    """Every bucket's pairs scored, the kept ones in candidate order; with `kept_in`, the pairs
    and levels pattern_statistics kept there are scored instead of compared again."""
    whole = _in_this_process(engine)
    jobs = ((*job[:5], model, keep_from, job[5], None if kept_in is None else _kept_path(kept_in, i))
            for i, job in enumerate(bucket_jobs(keys, labels, prepared, buckets, scope, whole)))
    tables = ScoringTables.of(model, prepared) if whole else None  # once, not per bucket: O(records)
    done = engine.map_lazily(bucket_scored, jobs, whole=whole, tables=tables, device=device)
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


# ---------------------------------------------------------------------------------------------
# The pair sources
# ---------------------------------------------------------------------------------------------
@dataclass
class HeldPairs:
    """Every candidate pair in memory (in the backend's array module), and once compared, their
    levels. `counts`: EM's statistics when the buckets that made the pairs summed them already."""

    pairs: CandidatePairs
    keys: np.ndarray  # the blocking keys (rules x records), for each pair's training sessions
    prepared: list[PreparedComparison]  # in the backend's array module
    kernels: str  # the numba target of the comparisons
    caches: MatchCaches
    reuse_levels: bool = False  # take the levels the state holds, compare only the others
    levels: object = None
    counts: tuple | None = None
    compared: int = 0
    hashes: np.ndarray | None = None  # per pair, for the state's pair cache
    summary: dict = field(default_factory=dict)

    def __post_init__(self):
        self.hashes = self.caches.pair_hashes(self.pairs.left, self.pairs.right)
        if self.levels is not None:  # compared where they were made
            self.compared = len(self.pairs)

    @property
    def made(self) -> int:
        return len(self.pairs)

    def compare(self, train: bool) -> int:
        """The pairs' levels; returns how many pairs were compared (the others' levels were known)."""
        if self.levels is not None:
            return self.compared
        known = self.caches.known_levels(self.hashes, len(self.prepared)) if self.reuse_levels else None
        left, right = self.pairs.left, self.pairs.right
        if known is None:
            self.levels, self.compared = comparison_matrix(self.prepared, left, right, self.kernels), len(left)
        else:  # incremental: compare only what changed
            self.levels, found = known
            todo = np.flatnonzero(~found)
            self.levels[todo] = comparison_matrix(self.prepared, left[todo], right[todo], self.kernels)
            self.compared = len(todo)
        return self.compared

    def statistics(self) -> tuple[tuple, int]:
        """EM's statistics (level patterns, training sessions, counts) and the candidates."""
        if self.counts is None:
            xp = module_of(self.levels)
            masks = agreement_masks(xp.asarray(self.keys), self.pairs.left.astype(xp.int64),
                                    self.pairs.right.astype(xp.int64))
            self.counts = pattern_counts(self.levels, masks)
        return self.counts, len(self.pairs)

    def scored(self, model: FSModel, keep_from: float) -> ScoredPairs:
        xp = module_of(self.levels)
        histogram = np.zeros(len(WEIGHT_BINS) - 1, dtype=np.int64)
        rows, weight, probability, tf = score_pairs(model, self.prepared, self.levels, self.pairs, keep_from, histogram)
        at = xp.asarray(rows)
        return ScoredPairs(to_host(self.pairs.left[at]).astype(np.int64), to_host(self.pairs.right[at]).astype(np.int64),
                           to_host(self.pairs.rule[at]), to_host(self.levels[at]), weight, probability, tf, histogram,
                           self.pairs.per_rule, self.compared)

    def pair_cache(self) -> pd.DataFrame | None:
        return self.caches.pair_cache(self.hashes, to_host(self.levels)) if self.hashes is not None else None


@dataclass
class StreamedPairs:
    """Pairs made bucket by bucket on the engine, never all held: a first pass sums EM's statistics
    (none when the model is given), a second scores every bucket's pairs and keeps those the
    outputs show. The result is the one holding every pair gives."""

    engine: Engine
    keys: np.ndarray
    labels: np.ndarray
    prepared: list[PreparedComparison]
    scope: PairScope | None
    buckets: int
    made = None  # no pair is made while blocking
    per_rule: list[int] | None = None
    counts: tuple | None = None
    kept: tempfile.TemporaryDirectory | None = None  # the first pass's pairs and levels (local engine)
    compared: int = 0  # pair comparisons made, over both passes (a pair compared twice counts twice)
    device: OnDevice | None = None  # buckets compared on a GPU (None: the host's kernels)

    def compare(self, train: bool) -> int | None:
        if not train:
            return None
        if _in_this_process(self.engine):  # its jobs share this disk
            self.kept = tempfile.TemporaryDirectory(prefix="resolver-pairs-")
        self.per_rule, self.counts = pattern_statistics(self.engine, self.keys, self.labels, self.prepared,
                                                        self.buckets, self.scope, self.kept and self.kept.name,
                                                        self.device)
        self.compared = sum(self.per_rule)
        return self.compared

    def statistics(self) -> tuple[tuple, int]:
        return self.counts, sum(self.per_rule)

    def scored(self, model: FSModel, keep_from: float) -> ScoredPairs:
        try:
            scored = scored_pairs(self.engine, self.keys, self.labels, self.prepared, self.buckets, model,
                                  keep_from, self.scope, self.kept and self.kept.name, self.device)
        finally:
            if self.kept is not None:
                self.kept.cleanup()
        if self.kept is None:
            self.compared += sum(scored.per_rule)
        return scored

    def pair_cache(self) -> None:
        return None  # a streamed run has no state

    @property
    def summary(self) -> dict:
        return {"streamed": {"buckets": self.buckets, "passes": 1 if self.counts is None else 2,
                             "pair_comparisons": self.compared,
                             "compared_on": _compared_on(self.device)}}


def _compared_on(device: OnDevice | None) -> str:
    return "host" if device is None else device.where


def _on_device(backend: Backend, engine: Engine, whole_on_backend: list | None = None) -> OnDevice | None:
    """Where bucket jobs compare on a GPU backend (None on the CPU backend): with
    `whole_on_backend` (every record's comparison data on this process's device, for jobs that
    index it whole: the local engine's streamed passes) there; else each job moves its own
    bucket's data to its GPU (a cluster worker's own)."""
    if not backend.on_gpu_path:
        return None
    whole = whole_on_backend if _in_this_process(engine) else None
    return OnDevice(backend.xp.__name__, backend.kernels, whole)


def _held(blocking: BlockingKeys, labels, prepared, on_backend, backend, engine, scope, caches,
          reuse_levels: bool = False) -> HeldPairs:
    return HeldPairs(candidate_pairs(blocking, labels, backend, scope), blocking.keys, on_backend, backend.kernels,
                     caches, reuse_levels=reuse_levels)


def held_in_buckets(blocking: BlockingKeys, labels, prepared, on_backend, backend, engine: Engine, scope,
                    caches) -> HeldPairs:
    """Pairs made and compared bucket by bucket on the engine (the cluster's tasks; on a GPU backend
    each worker makes and compares them on its own GPU), then held on the host, where they are
    scored."""
    buckets = engine.buckets_for(blocking.keys.shape[1])
    engine.description["pair_buckets"] = buckets
    device = _on_device(backend, engine)  # its jobs take their bucket's data (not whole)
    pairs, levels, counts = pairs_in_buckets(engine, blocking.keys, labels, prepared, buckets, scope, device)
    return HeldPairs(pairs, blocking.keys, prepared, backend.kernels, caches, levels=levels, counts=counts,
                     summary={"buckets": {"buckets": buckets, "compared_on": _compared_on(device)}})


def streamed(blocking: BlockingKeys, labels, prepared, on_backend, backend, engine: Engine, scope,
             caches) -> StreamedPairs:
    """Pairs made bucket by bucket; on a GPU backend each bucket's pairs are made, compared and
    counted on the device (the records' comparison data is moved there once), so device memory
    holds one bucket's pairs, not all of them; EM itself and scoring run on the host."""
    buckets = engine.buckets_for(blocking.keys.shape[1])
    engine.description["pair_buckets"] = buckets
    return StreamedPairs(engine, blocking.keys, np.asarray(labels, dtype=np.int64), prepared, scope, buckets,
                         device=_on_device(backend, engine, on_backend))


# The pair sources compute/dispatch.py chooses among, by name.
PAIR_SOURCES = {"held": _held, "held, reusing levels": partial(_held, reuse_levels=True), "buckets": held_in_buckets,
                "streamed": streamed}


def pair_source(blocking: BlockingKeys, labels: np.ndarray, prepared: list[PreparedComparison],
                on_backend: list[PreparedComparison], backend: Backend, engine: Engine, scope: PairScope | None,
                caches: MatchCaches, stream_above_pairs: int) -> HeldPairs | StreamedPairs:
    """The pairs of this run: streamed when the blocks hold more than `stream_above_pairs` pairs and
    the run has no state (whose caches keep every pair's hash and levels); held otherwise. Made here
    (in the blocking stage) when held."""
    streams = not caches.used and sum(p.pairs for p in blocking.plans) > stream_above_pairs
    name = choose("streamed_pairs" if streams else "pairs", backend, engine)
    return PAIR_SOURCES[name](blocking, labels, prepared, on_backend, backend, engine, scope, caches)
