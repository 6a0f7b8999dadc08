"""Scores and decisions: match weights and probabilities of candidate pairs (in chunks, on the
pairs' array module), must_agree vetoes, link / review / no_link, and the model's health check
that withholds automatic merges."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from resolver.compute.backend import module_of, to_host
from resolver.config import Config
from resolver.kernels.scoring import pair_sums
from resolver.matching.blocking import CandidatePairs
from resolver.matching.compare import PreparedComparison
from resolver.matching.model import (
    TF_CLIP_BITS,
    FSModel,
    health_problems,
    kept_comparisons,
    match_weights,
    model_notes,
    probabilities,
    redundant_groups,
    softplus2,
    tf_adjustments,
)

SCORE_CHUNK = 1_000_000  # pairs scored at a time: each holds ~0.1 GiB of (pairs, comparisons) floats
WEIGHT_BINS = np.arange(-40.0, 41.0, 1.0)  # match-weight histogram of every candidate pair (the run report)
DECISIONS = ("link", "review", "no_link", "guard_cut")


def decide(probability: np.ndarray, auto_merge: float, review: float, vetoed: np.ndarray) -> np.ndarray:
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


def model_health(model: FSModel, config: Config) -> dict:
    """The training health check (resolver.matching.model.health_problems) and what it means for this run:
    with problems, no automatic merge unless matching.model.allow_unhealthy."""
    options = config.matching.model
    problems = health_problems(model, config.matching.thresholds.auto_merge)
    return {"ok": not problems, "problems": problems, "notes": model_notes(model),
            "auto_merge_withheld": bool(problems) and not options.allow_unhealthy}


@dataclass
class ScoringTables:
    """The model as flat arrays for the compiled scoring pass: weights and household evidence per
    (comparison, rule, level), padded to the most levels; the redundant groups; each tf-adjusted
    comparison's bits per record (log2 of u(exact) over the record value's frequency, clipped)."""

    weights: np.ndarray
    prior: np.ndarray
    group_members: np.ndarray
    group_starts: np.ndarray
    tf_values: np.ndarray
    tf_slot: np.ndarray
    exact_level: np.ndarray
    neutral: np.ndarray
    household: bool
    h_weights: np.ndarray
    has_h: np.ndarray
    h_prior: np.ndarray
    household_field: np.ndarray

    @classmethod
    def of(cls, model: FSModel, prepared: list[PreparedComparison]) -> ScoringTables:
        n_rules, n_comp = len(model.rules), len(model.comparisons)
        width = max((len(c.labels) for c in model.comparisons), default=1)

        def padded(tables: list[np.ndarray]) -> np.ndarray:
            out = np.zeros((n_comp, n_rules, width))
            for k, table in enumerate(tables):
                out[k, :, : table.shape[1]] = table
            return out

        groups = redundant_groups(model)
        tf_slot = np.full(n_comp, -1, dtype=np.int64)
        tf_values = []
        for k, (c, p) in enumerate(zip(model.comparisons, prepared)):
            if c.tf_adjust and p.frequency is not None:
                u_exact = float(c.u_random[c.labels.index("exact")])
                with np.errstate(divide="ignore", invalid="ignore"):  # missing values: NaN, never read
                    tf_values.append(np.clip(np.log2(u_exact / p.frequency), -TF_CLIP_BITS, TF_CLIP_BITS))
                tf_slot[k] = len(tf_values) - 1
        n_records = len(prepared[0].valid) if prepared else 0
        household = model.has_household
        return cls(
            weights=padded(model.weight_table()), prior=np.asarray(model.prior_weights, dtype=np.float64),
            group_members=np.asarray([k for g in groups for k in g], dtype=np.int64),
            group_starts=np.cumsum([0] + [len(g) for g in groups]).astype(np.int64),
            tf_values=np.stack(tf_values) if tf_values else np.zeros((0, n_records)),
            tf_slot=tf_slot,
            exact_level=np.asarray([c.labels.index("exact") if "exact" in c.labels else -1
                                    for c in model.comparisons], dtype=np.int64),
            neutral=np.asarray(model.neutral, dtype=bool), household=household,
            h_weights=padded(model.household_table()) if household else np.zeros((n_comp, n_rules, width)),
            has_h=np.asarray([c.h is not None for c in model.comparisons], dtype=bool),
            h_prior=np.asarray(model.household_prior_weights, dtype=np.float64),
            household_field=np.asarray([bool(c.household_field) for c in model.comparisons], dtype=bool),
        )

    def scores(self, levels: np.ndarray, rule: np.ndarray, left: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(match weight, tf matrix) of each pair, as match_weights and tf_adjustments make them."""
        n = len(levels)
        total, evidence = np.empty(n), np.empty(n if self.household else 0)
        tf = np.empty(levels.shape)
        pair_sums(np.ascontiguousarray(levels), rule, left, self.weights, self.prior, self.group_members,
                  self.group_starts, self.tf_values, self.tf_slot, self.exact_level, self.neutral, self.household,
                  self.h_weights, self.has_h, self.h_prior, self.household_field, total, evidence, tf)
        if self.household:
            total = total + -softplus2(evidence)  # household_adjustments: the bits a household explains
        return total, tf


def score_pairs(model: FSModel, prepared: list[PreparedComparison], levels, pairs: CandidatePairs, keep_from: float,
                histogram: np.ndarray | None = None, tables: ScoringTables | None = None):
    """Weights and probabilities of all candidate pairs (in chunks, in the pairs' array module);
    returns, on the host, the rows with probability >= keep_from and their weight, probability, tf.
    With `histogram`, adds every pair's match weight to it (bins WEIGHT_BINS, the ends open).
    On the host the sums are one compiled pass (resolver/kernels/scoring.py), bitwise equal to the
    array code the GPU runs (`tables`: ScoringTables.of(model, prepared), when already made)."""
    xp = module_of(levels)
    edges = xp.asarray(WEIGHT_BINS)
    if xp is np and tables is None:
        tables = ScoringTables.of(model, prepared)
    kept = []
    for start in range(0, len(pairs), SCORE_CHUNK):
        chunk = slice(start, start + SCORE_CHUNK)
        left = pairs.left[chunk].astype(xp.int64)
        rule = pairs.rule[chunk].astype(xp.int64)
        if tables is not None:
            weight, tf = tables.scores(levels[chunk], rule, left)
        else:
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
