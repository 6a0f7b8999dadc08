"""Scores and decisions: match weights and probabilities of candidate pairs (in chunks, on the
pairs' array module), must_agree vetoes, link / review / no_link, and the model's health check
that withholds automatic merges."""

from __future__ import annotations

import numpy as np

from resolver.compute.backend import module_of, to_host
from resolver.config import Config
from resolver.matching.blocking import CandidatePairs
from resolver.matching.compare import PreparedComparison
from resolver.matching.model import (
    FSModel,
    health_problems,
    kept_comparisons,
    match_weights,
    model_notes,
    probabilities,
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
