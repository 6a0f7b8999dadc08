"""Fellegi-Sunter model: m and u probabilities per comparison level, trained without labels.

- u by random sampling: the level distribution over random record pairs (almost all non-matches).
- Starting m from the deterministic persons: pairs of records that share an identifier are known
  matches, so their levels on the other attributes are a labelled sample (blended with a neutral
  default because they agree on email/phone by construction).
- EM over the candidate pairs, on the counts of distinct level patterns (a few thousand patterns
  stand for millions of pairs, so each iteration is instant). By default EM also re-estimates u
  among the candidates: candidate non-matches are mostly household members and namesakes who agree
  on surname, address and phone far more often than random pairs do, and a weight learned there
  makes a shared address or phone weak evidence, as it should be.
- Guards: EM starts from the deterministic m (it cannot drift to "same household" unnoticed), and
  after training every comparison must have m > u at exact agreement and m < u at "else";
  otherwise a warning names it.

A pair's match weight is prior weight + one weight per comparison (log2 m/u of its level) + the
term-frequency adjustment, and its probability is 2^w / (1 + 2^w).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from resolver.backend.arrays import module_of, to_host
from resolver.compare import NULL_LEVEL, PreparedComparison

MODEL_FORMAT = 1
PROBABILITY_FLOOR = 1e-6
# No level is impossible for a match: a moved address or a new phone must cost bits, not veto.
M_FLOOR = 1e-3
PATTERN_CHUNK = 8_000_000
TF_CLIP_BITS = 10.0


class ModelError(ValueError):
    """A saved model that cannot be used with this configuration."""


@dataclass
class ComparisonModel:
    name: str
    method: str
    labels: list[str]
    m: np.ndarray  # per level (index 0 = null, unused)
    u: np.ndarray  # (n_rules, n_levels): per blocking rule, among that rule's candidate non-matches
    u_random: np.ndarray  # per level, over random record pairs
    tf_adjust: bool = False

    def weights(self) -> np.ndarray:
        """(n_rules, n_levels) log2(m/u); the null level weighs nothing."""
        m = np.maximum(np.nan_to_num(self.m, nan=1.0), PROBABILITY_FLOOR)
        u = np.maximum(np.nan_to_num(self.u, nan=1.0), PROBABILITY_FLOOR)
        w = np.log2(m[None, :] / u)
        w[:, NULL_LEVEL] = 0.0
        return w


@dataclass
class FSModel:
    """Fellegi-Sunter with one u (and match rate) per blocking rule.

    A pair is scored under the rule that produced it: the non-matches a surname + postcode rule
    brings are household members (they agree on address, differ on first name), those a full-name
    rule brings are namesakes (they agree on names, differ on address). One u for both would make
    each kind of agreement look stronger than it is; per rule, each weighs what it is worth.
    A comparison on a column the rule blocks on exactly is neutral (weight 0) for its pairs.
    """

    rules: list[str]
    comparisons: list[ComparisonModel]
    neutral: np.ndarray  # (n_rules, n_comparisons) bool
    match_rate: np.ndarray  # per rule: share of its candidate pairs that match (EM's lambda)
    prior: float  # probability that two random records match
    training: dict = field(default_factory=dict)

    @property
    def prior_weights(self) -> np.ndarray:
        lam = np.clip(self.match_rate, 1e-12, 1 - 1e-12)
        return np.log2(lam / (1 - lam))

    def weight_table(self) -> list[np.ndarray]:
        """Per comparison: (n_rules, n_levels) weights, neutral rules zeroed."""
        tables = []
        for k, c in enumerate(self.comparisons):
            w = c.weights()
            w[self.neutral[:, k], :] = 0.0
            tables.append(w)
        return tables

    # -- persistence ---------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "format": MODEL_FORMAT,
            "rules": self.rules,
            "prior": self.prior,
            "match_rate_by_rule": dict(zip(self.rules, map(float, self.match_rate))),
            "prior_weight_by_rule": dict(zip(self.rules, map(float, self.prior_weights))),
            "comparisons": [
                {
                    "name": c.name, "method": c.method, "tf_adjust": c.tf_adjust,
                    "neutral_in_rules": [r for r, n in zip(self.rules, self.neutral[:, k]) if n],
                    "levels": [
                        {"label": label, "m": float(c.m[i]), "u_random": float(c.u_random[i]),
                         "u_by_rule": dict(zip(self.rules, map(float, c.u[:, i]))),
                         "weight_by_rule": dict(zip(self.rules, map(float, w[:, i])))}
                        for i, label in enumerate(c.labels)
                        if i != NULL_LEVEL
                    ],
                }
                for k, (c, w) in enumerate(zip(self.comparisons, self.weight_table()))
            ],
            "training": self.training,
        }

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: Path, prepared: list[PreparedComparison], rules: list[str]) -> FSModel:
        """A saved model; its rules, comparisons and levels must be exactly the configured ones."""
        try:
            raw = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ModelError(f"{path}: cannot read model: {exc}") from exc
        return cls.from_dict(raw, prepared, rules, str(path))

    @classmethod
    def from_dict(cls, raw: dict, prepared: list[PreparedComparison], rules: list[str], path: str = "model") -> FSModel:
        """A model from to_dict(); `path` names it in errors."""
        if not isinstance(raw, dict) or raw.get("format") != MODEL_FORMAT:
            raise ModelError(f"{path}: not a resolver model of format {MODEL_FORMAT}")
        if raw["rules"] != rules:
            raise ModelError(f"{path}: the model's blocking rules {raw['rules']} differ from the configuration's {rules}")
        saved = [(c["name"], ["null"] + [lv["label"] for lv in c["levels"]]) for c in raw["comparisons"]]
        wanted = [(p.name, p.labels) for p in prepared]
        if saved != wanted:
            raise ModelError(f"{path}: the model's comparisons {saved} differ from the configuration's {wanted}")
        comparisons = []
        neutral = np.zeros((len(rules), len(prepared)), dtype=bool)
        for k, (c, p) in enumerate(zip(raw["comparisons"], prepared)):
            levels = c["levels"]
            m = np.array([np.nan] + [lv["m"] for lv in levels])
            u_random = np.array([np.nan] + [lv["u_random"] for lv in levels])
            u = np.array([[np.nan] + [lv["u_by_rule"][r] for lv in levels] for r in rules])
            comparisons.append(ComparisonModel(c["name"], c["method"], p.labels, m, u, u_random, p.config.tf_adjust))
            neutral[:, k] = [r in c["neutral_in_rules"] for r in rules]
        rate = np.array([raw["match_rate_by_rule"][r] for r in rules])
        return cls(rules, comparisons, neutral, rate, raw["prior"], raw.get("training", {}))


# ---------------------------------------------------------------------------------------------
# Estimation pieces
# ---------------------------------------------------------------------------------------------
def level_distribution(levels: np.ndarray, n_levels: int, weights: np.ndarray | None = None,
                       pseudo: float = 0.5) -> np.ndarray:
    """Share of each non-null level (index 0 = null gets NaN), with a small pseudo-count so that an
    unseen level gets a small probability rather than zero."""
    counts = np.bincount(levels, weights=weights, minlength=n_levels).astype(np.float64)[:n_levels]
    counts[NULL_LEVEL] = 0.0
    counts[1:] += pseudo
    out = counts / counts[1:].sum()
    out[NULL_LEVEL] = np.nan
    return out


def random_pairs(active: np.ndarray, n_pairs: int, seed: int, groups: np.ndarray | None = None,
                 link_type: str = "link_and_dedupe") -> tuple[np.ndarray, np.ndarray]:
    """Uniform random pairs of distinct active records. With `groups` (each record's source code)
    and a link type, uniform over the pairs it allows: link_only, records of different groups;
    dedupe_only, records of one group (matching.link_type); n_pairs of them (none when no pair is
    allowed)."""
    rng = np.random.default_rng(seed)
    pool = np.flatnonzero(active)
    if groups is not None and link_type != "link_and_dedupe":
        return _allowed_random_pairs(rng, pool, np.asarray(groups, dtype=np.int64), n_pairs, link_type)
    if len(pool) < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    a = pool[rng.integers(0, len(pool), n_pairs)]
    b = pool[rng.integers(0, len(pool), n_pairs)]
    keep = a != b
    return a[keep], b[keep]


def _allowed_random_pairs(rng: np.random.Generator, pool: np.ndarray, groups: np.ndarray, n_pairs: int,
                          link_type: str) -> tuple[np.ndarray, np.ndarray]:
    """Ordered pairs (a, b) drawn uniformly from those the link type allows: a with probability
    proportional to how many partners it has, then b uniformly among them (no rejection, so a
    source that dominates the data costs nothing)."""
    empty = np.zeros(0, np.int64), np.zeros(0, np.int64)
    pool = pool[np.argsort(groups[pool], kind="stable")]  # members of a group are contiguous
    g = groups[pool]
    _, start, size = np.unique(g, return_index=True, return_counts=True)
    group_of = np.searchsorted(start, np.arange(len(pool)), side="right") - 1
    own = size[group_of]
    partners = (len(pool) - own) if link_type == "link_only" else (own - 1)
    total = partners.sum()
    if total <= 0 or n_pairs <= 0:
        return empty
    a_pos = rng.choice(len(pool), size=n_pairs, p=partners / total)
    j = rng.integers(0, partners[a_pos])  # b's index among a's partners
    first = start[group_of[a_pos]]
    if link_type == "link_only":  # partners: every record before a's group, then every one after it
        b_pos = np.where(j < first, j, j + own[a_pos])
    else:  # partners: a's group without a
        b_pos = first + j + (first + j >= a_pos)
    return pool[a_pos].astype(np.int64), pool[b_pos].astype(np.int64)


def same_person_pairs(labels: np.ndarray, active: np.ndarray, limit: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of active records in one deterministic person: each record with the next one of its
    person (a chain covers every person once per member), at most `limit` of them, sampled."""
    rows = np.flatnonzero(active)
    order = rows[np.argsort(labels[rows], kind="stable")]
    same = labels[order[1:]] == labels[order[:-1]]
    a, b = order[:-1][same], order[1:][same]
    if len(a) > limit:
        pick = np.sort(np.random.default_rng(seed).choice(len(a), limit, replace=False))
        a, b = a[pick], b[pick]
    return a, b


def default_m(labels: list[str]) -> np.ndarray:
    """A neutral starting m: most matches agree exactly, some at graded levels, few not at all."""
    n = len(labels)
    m = np.full(n, np.nan)
    graded = n - 3
    m[1] = 0.75
    if graded:
        m[2:-1] = 0.2 / graded
        m[-1] = 0.05
    else:
        m[-1] = 0.25
    return m


def pattern_counts(levels, rule=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct (rule, level pattern) rows and how many pairs have each: (patterns, rules, counts),
    the sufficient statistics of EM, returned on the host.

    Each row is packed into one integer (mixed radix), so tens of millions of pairs reduce with one
    bincount (or one integer sort), never a row-wise sort of the matrix. Array-module generic: CuPy
    levels are reduced on the GPU and only the distinct patterns come back."""
    xp = module_of(levels)
    rule = xp.zeros(len(levels), xp.int64) if rule is None else rule.astype(xp.int64)
    n, k = levels.shape
    if n == 0:
        return to_host(levels), to_host(rule), np.zeros(0, np.int64)
    radix = [int(levels[:, j].max()) + 1 for j in range(k)] + [int(rule.max()) + 1]
    span = int(np.prod(np.array(radix, dtype=np.float64)))
    found_keys, found_counts = [], []
    for start in range(0, n, PATTERN_CHUNK):  # chunks bound the memory of the packed keys
        part = slice(start, start + PATTERN_CHUNK)
        key = xp.zeros(len(rule[part]), dtype=xp.int64)
        for j in range(k):
            key *= radix[j]
            key += levels[part, j]
        key *= radix[-1]
        key += rule[part]
        if span <= 1 << 24:
            counts = xp.bincount(key, minlength=span)
            keys = xp.flatnonzero(counts)
            counts = counts[keys]
        else:
            keys, counts = xp.unique(key, return_counts=True)
        found_keys.append(to_host(keys))
        found_counts.append(to_host(counts))
    keys, inverse = np.unique(np.concatenate(found_keys), return_inverse=True)
    counts = np.bincount(inverse, weights=np.concatenate(found_counts)).astype(np.int64)
    rules = keys % radix[-1]
    keys //= radix[-1]
    patterns = np.zeros((len(keys), k), dtype=to_host(levels[:1]).dtype)
    for j in reversed(range(k)):
        patterns[:, j] = keys % radix[j]
        keys //= radix[j]
    return patterns, rules, counts



def merge_pattern_counts(parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]], n_comparisons: int):
    """Sum per-partition (patterns, rules, counts) into what pattern_counts gives over all pairs
    (distinct rows in lexicographic order of the levels, then the rule)."""
    parts = [p for p in parts if len(p[2])]
    if not parts:
        return np.zeros((0, n_comparisons), dtype=np.int8), np.zeros(0, np.int64), np.zeros(0, np.int64)
    patterns = np.concatenate([p[0] for p in parts])
    rules = np.concatenate([p[1] for p in parts]).astype(np.int64)
    counts = np.concatenate([p[2] for p in parts]).astype(np.int64)
    order = np.lexsort((rules, *[patterns[:, j] for j in reversed(range(patterns.shape[1]))]))
    patterns, rules, counts = patterns[order], rules[order], counts[order]
    new = np.ones(len(order), dtype=bool)
    new[1:] = (patterns[1:] != patterns[:-1]).any(axis=1) | (rules[1:] != rules[:-1])
    starts = np.flatnonzero(new)
    return patterns[starts], rules[starts], np.add.reduceat(counts, starts)

def floored(p: np.ndarray, floor: float) -> np.ndarray:
    out = p.copy()
    out[1:] = np.maximum(out[1:], floor)
    out[1:] /= out[1:].sum()
    return out


def _log_table(p: np.ndarray) -> np.ndarray:
    logs = np.log(np.maximum(np.nan_to_num(p, nan=1.0), PROBABILITY_FLOOR))
    logs[..., NULL_LEVEL] = 0.0
    return logs


def _log_likelihood_ratio(patterns: np.ndarray, rule: np.ndarray, m: list[np.ndarray], u: list[np.ndarray],
                          active: np.ndarray) -> np.ndarray:
    """Per pattern: log P(levels | match) - log P(levels | non-match, its rule)."""
    out = np.zeros(len(patterns))
    for k in range(len(m)):
        term = _log_table(m[k])[patterns[:, k]] - _log_table(u[k])[rule, patterns[:, k]]
        out += np.where(active[rule, k], term, 0.0)
    return out


def _per_rule_distribution(levels: np.ndarray, rule: np.ndarray, n_rules: int, n_levels: int, weights: np.ndarray,
                           pseudo: float) -> np.ndarray:
    counts = np.bincount(rule * n_levels + levels, weights=weights, minlength=n_rules * n_levels)
    counts = counts.reshape(n_rules, n_levels)
    counts[:, NULL_LEVEL] = 0.0
    counts[:, 1:] += pseudo
    out = counts / counts[:, 1:].sum(axis=1, keepdims=True)
    out[:, NULL_LEVEL] = np.nan
    return out


def candidate_u(patterns: np.ndarray, rule: np.ndarray, counts: np.ndarray, n_rules: int,
                n_levels: list[int]) -> list[np.ndarray]:
    """u per rule as the level distribution over all of the rule's candidate pairs. Candidates are
    overwhelmingly non-matches, and unlike an EM estimate this cannot drift: a rule whose pairs are
    mostly one household cannot make EM call the household a match by shrinking its u."""
    return [_per_rule_distribution(patterns[:, k].astype(np.int64), rule, n_rules, n, counts.astype(np.float64), 0.5)
            for k, n in enumerate(n_levels)]


def without_matches(u: list[np.ndarray], m: list[np.ndarray], lam: np.ndarray) -> list[np.ndarray]:
    """u per rule with the rule's expected matches taken out, (u - lambda m) / (1 - lambda), but
    never below half of u: a rule whose candidates are a quarter matches must not count their
    agreement as u, and one step, bounded, cannot run away (iterating u inside EM lets a rule
    whose pairs are mostly one household slide into calling the household a match)."""
    out = []
    for u_k, m_k in zip(u, m):
        lam_col = np.clip(lam, 0.0, 0.9)[:, None]
        corrected = (u_k - lam_col * np.nan_to_num(m_k, nan=0.0)[None, :]) / (1 - lam_col)
        corrected[:, 1:] = np.maximum(corrected[:, 1:], u_k[:, 1:] / 2)
        corrected[:, 1:] /= corrected[:, 1:].sum(axis=1, keepdims=True)
        corrected[:, NULL_LEVEL] = np.nan
        out.append(corrected)
    return out


def expectation_maximisation(patterns: np.ndarray, rule: np.ndarray, counts: np.ndarray, neutral: np.ndarray,
                             m0: list[np.ndarray], u: list[np.ndarray], lambda0: np.ndarray,
                             max_iterations: int, tolerance: float,
                             known: tuple[np.ndarray, np.ndarray] | None = None,
                             fixed_m: list[bool] | None = None):
    """EM over (rule, level pattern) counts: m shared by all rules and lambda per rule; u is given
    (per rule) and stays fixed.

    `known` (patterns, counts) are pairs known to match (deterministic persons): they enter every
    M-step for m with weight 1, which anchors the match class on people, not households.
    Comparisons the known pairs were selected on must be level 0 (null) there.
    `fixed_m[k]` keeps comparison k's m at its starting value (a labelled estimate).
    Returns m, u, lambda (per rule), iterations, converged.
    """
    n_rules = neutral.shape[0]
    active = ~neutral
    m = [x.copy() for x in m0]
    u = [x.copy() for x in u]
    lam = np.asarray(lambda0, dtype=np.float64).copy()
    counts = counts.astype(np.float64)
    pairs_per_rule = np.bincount(rule, weights=counts, minlength=n_rules)
    if known is not None and len(known[0]):
        known_patterns, known_mass = known[0], known[1].astype(np.float64)
    else:
        known_patterns, known_mass = np.zeros((0, len(m)), np.int8), np.zeros(0)
    converged = False
    iteration = 0
    for iteration in range(1, max_iterations + 1):
        lam_c = np.clip(lam, 1e-9, 1 - 1e-9)
        logit = np.log(lam_c[rule]) - np.log1p(-lam_c[rule]) + _log_likelihood_ratio(patterns, rule, m, u, active)
        w = 1.0 / (1.0 + np.exp(-np.clip(logit, -700, 700)))
        match_mass = counts * w
        new_m = []
        for k in range(len(m)):
            if fixed_m is not None and fixed_m[k]:
                new_m.append(m[k])
                continue
            informative = active[rule, k]  # a neutral comparison says nothing about m
            levels = np.concatenate([patterns[informative, k], known_patterns[:, k]])
            mass = np.concatenate([match_mass[informative], known_mass])
            new_m.append(floored(level_distribution(levels, len(m[k]), mass, pseudo=1e-3), M_FLOOR))
        new_lam = np.bincount(rule, weights=match_mass, minlength=n_rules) / np.maximum(pairs_per_rule, 1.0)
        change = max(float(np.nanmax(np.abs(a - b))) for a, b in zip(new_m, m))
        change = max(change, float(np.max(np.abs(new_lam - lam), initial=0.0)))
        m, lam = new_m, new_lam
        if change < tolerance:
            converged = True
            break
    return m, u, lam, iteration, converged


def training_warnings(comparisons: list[ComparisonModel]) -> list[str]:
    """The EM guard: against random pairs, exact agreement must favour a match and total
    disagreement must count against one; otherwise EM has probably learned another class."""
    out = []
    for c in comparisons:
        top = 1  # "exact" (or the closest distance level)
        if c.m[top] <= c.u_random[top]:
            out.append(f"comparison {c.name!r}: m <= u at {c.labels[top]!r} ({c.m[top]:.3g} vs {c.u_random[top]:.3g}); "
                       "EM may have learned households instead of people")
        if c.labels[-1] == "else" and c.m[-1] >= c.u_random[-1]:
            out.append(f"comparison {c.name!r}: m >= u at 'else' ({c.m[-1]:.3g} vs {c.u_random[-1]:.3g}); "
                       "disagreement does not count against a match")
    return out


# ---------------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------------
def tf_adjustments(model: FSModel, prepared: list[PreparedComparison], levels, rule, left):
    """(n_pairs, n_comparisons) extra bits for exact agreement on a rarer (or commoner) value than
    average: log2(u_random(exact) / frequency of the value), clipped to +/- TF_CLIP_BITS.
    Array-module generic (prepared comparisons in the same module as the levels)."""
    xp = module_of(levels)
    out = xp.zeros(levels.shape, dtype=xp.float64)
    neutral = xp.asarray(model.neutral)
    for k, (c, p) in enumerate(zip(model.comparisons, prepared)):
        if not c.tf_adjust or p.frequency is None:
            continue
        exact = (levels[:, k] == c.labels.index("exact")) & ~neutral[rule, k]
        freq = p.frequency[left[exact]]
        u_exact = float(c.u_random[c.labels.index("exact")])
        out[exact, k] = xp.clip(xp.log2(u_exact / freq), -TF_CLIP_BITS, TF_CLIP_BITS)
    return out


def comparison_weights(model: FSModel, levels, rule):
    """(n_pairs, n_comparisons) weight of each pair's level under its rule (without tf)."""
    xp = module_of(levels)
    out = xp.zeros(levels.shape, dtype=xp.float64)
    for k, table in enumerate(model.weight_table()):
        out[:, k] = xp.asarray(table)[rule, levels[:, k]]
    return out


def match_weights(model: FSModel, levels, rule, tf=None):
    """Prior weight + each comparison's weight (+ tf), added left to right in one fixed order so
    that numpy and CuPy give bit-identical sums."""
    xp = module_of(levels)
    per_comparison = comparison_weights(model, levels, rule)
    total = xp.asarray(model.prior_weights)[rule]
    for k in range(per_comparison.shape[1]):
        total = total + per_comparison[:, k]
    if tf is not None:
        for k in range(tf.shape[1]):
            total = total + tf[:, k]
    return total


def probabilities(weights):
    xp = module_of(weights)
    return 1.0 / (1.0 + xp.exp2(-xp.clip(weights, -1000, 1000)))
