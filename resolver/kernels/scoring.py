"""Fellegi-Sunter sums of candidate pairs in one compiled pass (the CPU twin of the array code in
resolver/matching/model.py: kept_comparisons, tf_adjustments, match_weights, household_adjustments).

The array code makes a (pairs x comparisons) float table for every step; this loop reads each
pair's levels once and adds its weights in the same order, with the same float64 operations, so
the sums are bitwise equal. The logarithms stay outside: the term-frequency bits come in per
record (`tf_values`, computed by the caller with numpy's log2), and the household softplus and the
probabilities are applied by the caller to the sums this returns.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

BLOCK = 4096  # pairs a thread works through with one set of scratch arrays


@njit(parallel=True, cache=True, nogil=True)
def pair_sums(levels, rule, left, weights, prior, group_members, group_starts, tf_values, tf_slot, exact_level,
              neutral, household, h_weights, has_h, h_prior, household_field, total, evidence, tf_out):
    """Per pair i (levels[i, k] int8, rule[i], left[i] its left record):

    raw[k]  = weights[k, rule, level]; among each group of redundant comparisons (members
              group_members[group_starts[g]:group_starts[g + 1]]) only the first of the largest
              |raw| counts (numpy's argmax), the others count 0 (keep);
    tf[k]   = tf_values[tf_slot[k], left] where the comparison is tf-adjusted (slot >= 0), the
              pair agrees exactly, the rule does not block on it and it counts; else 0;
    total   = prior[rule] + sum_k raw[k] * keep[k] + sum_k tf[k];
    evidence (with a household class) = h_prior[rule] + sum over comparisons with a household
              table of h_weights[k, rule, level] * keep[k] (+ tf[k] for household fields).
    tf_out receives tf (the pairs' tf matrix)."""
    n, k_count = levels.shape
    n_groups = len(group_starts) - 1
    for block in prange((n + BLOCK - 1) // BLOCK):
        raw = np.empty(k_count)
        keep = np.empty(k_count)
        tf = np.empty(k_count)
        for i in range(block * BLOCK, min(n, (block + 1) * BLOCK)):
            r = rule[i]
            for k in range(k_count):
                raw[k] = weights[k, r, levels[i, k]]
                keep[k] = 1.0
            for g in range(n_groups):
                best = group_members[group_starts[g]]
                for j in range(group_starts[g] + 1, group_starts[g + 1]):
                    if abs(raw[group_members[j]]) > abs(raw[best]):
                        best = group_members[j]
                for j in range(group_starts[g], group_starts[g + 1]):
                    if group_members[j] != best:
                        keep[group_members[j]] = 0.0
            s = prior[r]
            for k in range(k_count):
                s = s + raw[k] * keep[k]
            for k in range(k_count):
                tf[k] = 0.0
                slot = tf_slot[k]
                if slot >= 0 and levels[i, k] == exact_level[k] and not neutral[r, k] and keep[k] != 0.0:
                    tf[k] = tf_values[slot, left[i]]
                tf_out[i, k] = tf[k]
            for k in range(k_count):
                s = s + tf[k]
            total[i] = s
            if household:
                e = h_prior[r]
                for k in range(k_count):
                    if has_h[k]:
                        e = e + h_weights[k, r, levels[i, k]] * keep[k]
                        if household_field[k]:
                            e = e + tf[k]
                evidence[i] = e
