"""Fellegi-Sunter model with a household class, trained without labels.

Three kinds of record pair, each with a level distribution per comparison:

- **match** (same person): m, learned by EM for every comparison, warm-started from the pairs the
  deterministic graph already joined when there are some;
- **household** (different people of one household): h. On household fields (surname, address,
  postcode, phone: what people living together share) h is learned by EM; on person fields (first
  name, birth date, email, ids) h is u but for a small share of pairs that agree beyond chance
  (twins, a relative's value copied; at most MAX_COPIED). So agreeing on the address and the
  phone is household evidence, and a differing first name or birth date is what separates a
  household from a person;
- **unrelated**: u, from uniformly random record pairs. Random pairs are a sample of the non-
  matches whatever blocking chose, so u never depends on which rule found a pair: a tight rule
  whose candidates are all matches cannot drag u up to m (the collapse of the earlier design).

`fit_em` estimates m, h and the class shares of each group of pairs ("rule"); the matcher's groups
are its training sessions (resolver/matching/match.py: one per blocking rule, over every pair of its
blocks, the comparisons it selects on left out), shrunk towards the pooled shares so that a small
group cannot run away. The matcher then turns the sessions' shares into shares among all pairs
and scores every pair alike (its FSModel has the same shares for every rule and nothing neutral);
the visitor stitcher's model keeps shares and u per rule.

EM works on the counts of distinct (rule, level pattern) rows: a few thousand patterns stand for
millions of pairs, so each iteration is instant. After each M-step the level weights are made
monotone (a closer level never weighs less than a farther one: pool-adjacent-violators on m/u).

A pair's match weight is log2 P(match) / P(not match):

    prior + sum over comparisons of log2(m/u) (+ term frequency) + household adjustment

where the household adjustment -log2(1 + 2^H) <= 0, with H = household prior + every field's
log2(h/u): the weight a pair loses because a household explains it as well as a person. Of a
group of redundant comparisons (places nested in one another) only one counts (kept_comparisons).
The probability is 2^w / (1 + 2^w).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from resolver.compute.backend import module_of, to_host
from resolver.matching.compare import NULL_LEVEL, PreparedComparison

MODEL_FORMAT = 2
READABLE_FORMATS = (1, 2)
PROBABILITY_FLOOR = 1e-6
# No level is impossible for a match: a moved address or a new phone must cost bits, not veto.
M_FLOOR = 1e-3
PATTERN_CHUNK = 8_000_000
TF_CLIP_BITS = 10.0
# A rule's class shares are shrunk towards the pooled ones with this many pseudo-pairs.
RATE_PSEUDO_PAIRS = 10.0
# EM stops when no probability moves more than its tolerance, or the log-likelihood rises by less
# than this many nats per pair in an iteration.
LIKELIHOOD_TOLERANCE = 1e-8


class ModelError(ValueError):
    """A saved model that cannot be used with this configuration."""


@dataclass
class ComparisonModel:
    name: str
    method: str
    labels: list[str]
    m: np.ndarray  # per level (index 0 = null, unused)
    u: np.ndarray  # (n_rules, n_levels): per blocking rule (matching: every row is u_random)
    u_random: np.ndarray  # per level, over random record pairs
    tf_adjust: bool = False
    h: np.ndarray | None = None  # per level among household pairs (None: no household class)
    household_field: bool = False  # shared by a household (h learned freely; else u with its own exact share)

    def weights(self) -> np.ndarray:
        """(n_rules, n_levels) log2(m/u); the null level weighs nothing."""
        return _log2_ratio(self.m, self.u)

    def household_weights(self) -> np.ndarray:
        """(n_rules, n_levels) log2(h/u) (zero without a household class)."""
        if self.h is None:
            return np.zeros_like(np.atleast_2d(self.u), dtype=np.float64)
        return _log2_ratio(self.h, self.u)


def _log2_ratio(p: np.ndarray, u: np.ndarray) -> np.ndarray:
    p = np.maximum(np.nan_to_num(p, nan=1.0), PROBABILITY_FLOOR)
    u = np.maximum(np.nan_to_num(np.atleast_2d(u), nan=1.0), PROBABILITY_FLOOR)
    w = np.log2(p[None, :] / u)
    w[:, NULL_LEVEL] = 0.0
    return w


@dataclass
class FSModel:
    """Fellegi-Sunter with class shares per blocking rule (match, and household when the model has
    a household class).

    A pair is scored under the rule that produced it: its rule's shares are the prior, and a
    comparison of a column the rule blocks on exactly is neutral (weight 0) for its pairs.
    """

    rules: list[str]
    comparisons: list[ComparisonModel]
    neutral: np.ndarray  # (n_rules, n_comparisons) bool
    match_rate: np.ndarray  # per rule: share of its candidate pairs that match (EM's lambda)
    prior: float  # probability that two random records match
    training: dict = field(default_factory=dict)
    household_rate: np.ndarray | None = None  # per rule: share of household pairs (None: no household class)

    @property
    def has_household(self) -> bool:
        return self.household_rate is not None

    def _unrelated_rate(self) -> np.ndarray:
        household = self.household_rate if self.has_household else 0.0
        return np.clip(1.0 - self.match_rate - household, 1e-12, 1.0)

    @property
    def prior_weights(self) -> np.ndarray:
        """Per rule: log2(match share / unrelated share)."""
        lam = np.clip(self.match_rate, 1e-12, 1 - 1e-12)
        return np.log2(lam / self._unrelated_rate())

    @property
    def household_prior_weights(self) -> np.ndarray:
        """Per rule: log2(household share / unrelated share) (-inf-like when no household class)."""
        if not self.has_household:
            return np.full(len(self.rules), -1000.0)
        return np.log2(np.clip(self.household_rate, 1e-12, 1.0) / self._unrelated_rate())

    def weight_table(self) -> list[np.ndarray]:
        """Per comparison: (n_rules, n_levels) weights, neutral rules zeroed."""
        return [self._zero_neutral(c.weights(), k) for k, c in enumerate(self.comparisons)]

    def household_table(self) -> list[np.ndarray]:
        """Per comparison: (n_rules, n_levels) household evidence log2(h/u), neutral rules zeroed."""
        return [self._zero_neutral(c.household_weights(), k) for k, c in enumerate(self.comparisons)]

    def _zero_neutral(self, table: np.ndarray, k: int) -> np.ndarray:
        table = np.broadcast_to(table, (len(self.rules), table.shape[-1])).copy()
        table[self.neutral[:, k], :] = 0.0
        return table

    # -- persistence ---------------------------------------------------------------------------
    def to_dict(self) -> dict:
        household = self.household_rate if self.has_household else np.zeros(len(self.rules))
        return {
            "format": MODEL_FORMAT,
            "rules": self.rules,
            "prior": self.prior,
            "match_rate_by_rule": dict(zip(self.rules, map(float, self.match_rate))),
            "household_rate_by_rule": dict(zip(self.rules, map(float, household))) if self.has_household else None,
            "prior_weight_by_rule": dict(zip(self.rules, map(float, self.prior_weights))),
            "comparisons": [
                {
                    "name": c.name, "method": c.method, "tf_adjust": c.tf_adjust,
                    "household_field": c.household_field,
                    "neutral_in_rules": [r for r, n in zip(self.rules, self.neutral[:, k]) if n],
                    "levels": [
                        {"label": label, "m": float(c.m[i]), "u_random": float(c.u_random[i]),
                         **({"h": float(c.h[i])} if c.h is not None else {}),
                         "u_by_rule": dict(zip(self.rules, map(float, np.atleast_2d(c.u)[:, i]))),
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
        if not isinstance(raw, dict) or raw.get("format") not in READABLE_FORMATS:
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
            h = np.array([np.nan] + [lv["h"] for lv in levels]) if all("h" in lv for lv in levels) else None
            comparisons.append(ComparisonModel(c["name"], c["method"], p.labels, m, u, u_random, p.config.tf_adjust, h,
                                               bool(c.get("household_field"))))
            neutral[:, k] = [r in c["neutral_in_rules"] for r in rules]
        rate = np.array([raw["match_rate_by_rule"][r] for r in rules])
        household = raw.get("household_rate_by_rule")
        household = np.array([household[r] for r in rules]) if household else None
        return cls(rules, comparisons, neutral, rate, raw["prior"], raw.get("training", {}), household)


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


def monotone(p: np.ndarray, u: np.ndarray) -> np.ndarray:
    """p with p/u non-increasing over the levels in order (closest first), by pool-adjacent-
    violators on the ratio weighted by u: a violating run of levels shares one ratio, sum(p)/sum(u)
    over the run. The total of p is kept, so p stays a distribution."""
    ratio = list(p[1:] / u[1:])
    mass_p, mass_u = list(p[1:]), list(u[1:])
    blocks: list[list[float]] = []  # [sum p, sum u, levels]
    for i in range(len(ratio)):
        blocks.append([mass_p[i], mass_u[i], 1])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] < blocks[-1][0] / blocks[-1][1]:
            sp, su, n = blocks.pop()
            blocks[-1][0] += sp
            blocks[-1][1] += su
            blocks[-1][2] += n
    out = p.copy()
    i = 1
    for sp, su, n in blocks:
        out[i:i + n] = u[i:i + n] * (sp / su)
        i += n
    return out


def tilted(u: np.ndarray, exact: float) -> np.ndarray:
    """u with its exact level's share set to `exact` (never below u's own) and the other levels
    scaled to fill the rest: a field on which a class agrees exactly more often than strangers do,
    and otherwise like strangers."""
    exact = min(max(exact, float(u[1])), 1.0 - 1e-6)
    out = u.copy()
    rest = max(1.0 - float(u[1]), 1e-12)
    out[2:] = u[2:] * (1.0 - exact) / rest
    out[1] = exact
    return out


def is_monotone(m: np.ndarray, u: np.ndarray, tolerance: float = 1e-9) -> bool:
    ratio = np.log(np.maximum(m[1:], PROBABILITY_FLOOR)) - np.log(np.maximum(u[1:], PROBABILITY_FLOOR))
    return bool(np.all(np.diff(ratio) <= tolerance))


def _log_table(p: np.ndarray) -> np.ndarray:
    logs = np.log(np.maximum(np.nan_to_num(p, nan=1.0), PROBABILITY_FLOOR))
    logs[..., NULL_LEVEL] = 0.0
    return logs


@dataclass
class EMFit:
    """What EM learned: m per comparison, h per household comparison (None elsewhere), and the
    class shares per rule."""

    m: list[np.ndarray]
    h: list[np.ndarray | None]
    match_rate: np.ndarray
    household_rate: np.ndarray | None
    iterations: int
    converged: bool
    log_likelihood: float


def _shrunk_rates(mass: np.ndarray, pairs: np.ndarray, pseudo: float) -> np.ndarray:
    pooled = mass.sum() / max(pairs.sum(), 1.0)
    return (mass + pseudo * pooled) / np.maximum(pairs + pseudo, 1e-12)


def _u_terms(patterns: np.ndarray, rule: np.ndarray, active: np.ndarray, u: list[np.ndarray]) -> list[np.ndarray]:
    return [np.where(active[rule, k], _log_table(u[k])[rule, patterns[:, k]], 0.0) for k in range(len(u))]


def class_posteriors(patterns: np.ndarray, rule: np.ndarray, neutral: np.ndarray, m: list[np.ndarray],
                     h: list[np.ndarray | None], u: list[np.ndarray], match_rate: np.ndarray,
                     household_rate: np.ndarray | None, u_terms: list[np.ndarray] | None = None):
    """Per pattern: P(match), P(household) (zeros without a household class) and the log-likelihood
    of the pattern, under its rule's class shares. Neutral comparisons are left out."""
    active = ~neutral
    rule = np.asarray(rule, dtype=np.int64)
    u_terms = _u_terms(patterns, rule, active, u) if u_terms is None else u_terms
    household = household_rate is not None
    log_u = np.sum(u_terms, axis=0) if u_terms else np.zeros(len(patterns))
    log_m = np.zeros(len(patterns))
    log_h = log_u.copy()
    for k in range(len(m)):
        log_m += np.where(active[rule, k], _log_table(m[k])[patterns[:, k]], 0.0)
        if household and h[k] is not None:
            log_h += np.where(active[rule, k], _log_table(h[k])[patterns[:, k]], 0.0) - u_terms[k]
    lam_h = household_rate if household else np.zeros_like(match_rate)
    lam_u = np.clip(1.0 - match_rate - lam_h, 1e-12, 1.0)
    a = np.log(np.clip(match_rate[rule], 1e-300, 1.0)) + log_m
    c = np.log(lam_u[rule]) + log_u
    b = np.log(np.clip(lam_h[rule], 1e-300, 1.0)) + log_h if household else np.full(len(patterns), -np.inf)
    top = np.maximum(np.maximum(a, b), c)
    ea, eb, ec = np.exp(a - top), np.exp(b - top), np.exp(c - top)
    total = ea + eb + ec
    return ea / total, eb / total, top + np.log(total)


def fit_em(patterns: np.ndarray, rule: np.ndarray, counts: np.ndarray, neutral: np.ndarray,
           m0: list[np.ndarray], u: list[np.ndarray], match_rate0: np.ndarray, max_iterations: int, tolerance: float,
           known: tuple[np.ndarray, np.ndarray] | None = None, fixed_m: list[bool] | None = None,
           learns_m: np.ndarray | None = None, h0: list[np.ndarray | None] | None = None,
           household_rate0: np.ndarray | None = None, monotone_against: list[np.ndarray] | None = None,
           rate_pseudo_pairs: float = 0.0, h_reference: list[np.ndarray] | None = None) -> EMFit:
    """EM over (rule, level pattern) counts (a "rule" may be any group of pairs with class shares
    of its own: the matcher's training sessions).

    - `neutral` (n_rules, K): comparisons that say nothing for a rule's pairs (it selected on them).
    - `u` per comparison, (n_rules, n_levels): fixed.
    - `m0`: starting m; `fixed_m[k]` keeps comparison k's m as given (a labelled estimate).
    - `learns_m` (n_rules, K): where a rule's pairs inform m and h (default: wherever not neutral).
    - `known` (patterns, counts): pairs known to match, in every M-step for m with weight 1.
    - `h0`: starting h of the household fields (None elsewhere), with `household_rate0` per rule
      and `h_reference` (u over random pairs, per comparison): a three-class model. On a household
      field h is learned like m; on the others it is u but for a share of pairs that agree beyond
      chance, at most MAX_COPIED (household members share a first name or a birth date hardly more
      often than strangers, but twins, juniors and data that copies a relative's value do).
      Without them, two classes.
    - `monotone_against`: per comparison, the u that m/u (and h/u) is kept non-increasing against.
    - `rate_pseudo_pairs`: each rule's shares are shrunk towards the pooled shares by this many pairs.
    """
    n_rules, n_comparisons = neutral.shape
    learns = ~neutral if learns_m is None else learns_m
    household = h0 is not None and household_rate0 is not None and any(h is not None for h in h0)
    m = [x.copy() for x in m0]
    shared = [household and x is not None for x in (h0 or [None] * n_comparisons)]
    h = [None] * n_comparisons
    if household:
        h = [x.copy() if x is not None else h_reference[k].copy() for k, x in enumerate(h0)]
    lam_m = np.asarray(match_rate0, dtype=np.float64).copy()
    lam_h = np.asarray(household_rate0, dtype=np.float64).copy() if household else None
    counts = counts.astype(np.float64)
    rule = np.asarray(rule, dtype=np.int64)
    pairs_per_rule = np.bincount(rule, weights=counts, minlength=n_rules)
    if known is not None and len(known[0]):
        known_patterns, known_mass = known[0], known[1].astype(np.float64)
    else:
        known_patterns, known_mass = np.zeros((0, n_comparisons), np.int8), np.zeros(0)
    u_terms = _u_terms(patterns, rule, ~neutral, u)  # fixed: computed once

    def fitted(p: np.ndarray, mass: np.ndarray, levels: np.ndarray, k: int) -> np.ndarray:
        out = floored(level_distribution(levels, len(p), mass, pseudo=1e-3), M_FLOOR)
        return monotone(out, monotone_against[k]) if monotone_against is not None else out

    def fitted_person(mass: np.ndarray, levels: np.ndarray, k: int) -> np.ndarray:
        """A person field's h: u, but for the share of household pairs that agree beyond chance
        (a copied or inherited value, twins), at most MAX_COPIED: a class agreeing on birth date
        and id most of the time is a person with a typo elsewhere, not a household."""
        present = levels > 0
        n, exact, chance = float(mass[present].sum()), float(mass[levels == 1].sum()), float(h_reference[k][1])
        # MAP under a prior of COPIED_PRIOR_PAIRS household pairs agreeing by chance alone: a few
        # hundred household pairs (some of them matches EM has not placed yet) do not make a share
        n, exact = n + COPIED_PRIOR_PAIRS, exact + COPIED_PRIOR_PAIRS * chance
        beyond = (exact - chance * n) / ((1.0 - chance) * n)
        return tilted(h_reference[k], chance + min(max(beyond, 0.0), MAX_COPIED) * (1.0 - chance))

    converged = False
    iteration = 0
    log_likelihood = previous = -np.inf
    w_m_before = None
    for iteration in range(1, max_iterations + 1):
        w_m, w_h, pattern_ll = class_posteriors(patterns, rule, neutral, m, h, u, lam_m, lam_h, u_terms)
        previous, log_likelihood = log_likelihood, float((counts * pattern_ll).sum())
        # EM's likelihood never falls: when it no longer rises, stop
        if abs(log_likelihood - previous) <= LIKELIHOOD_TOLERANCE * counts.sum():
            converged = True
            break
        # A class with almost no pairs can drift for hundreds of iterations (a household class
        # between "household" and "unrelated"; m when hardly any pair matches) without moving the
        # match rates or any pair's match posterior: converged for matching once those stand still.
        posterior_change = np.inf if w_m_before is None else float(np.max(np.abs(w_m - w_m_before), initial=0.0))
        w_m_before = w_m
        match_mass, household_mass = counts * w_m, counts * w_h
        new_m, new_h = [], []
        for k in range(n_comparisons):
            informative = learns[rule, k]
            if fixed_m is not None and fixed_m[k]:
                new_m.append(m[k])
            else:
                new_m.append(fitted(m[k], np.concatenate([match_mass[informative], known_mass]),
                                    np.concatenate([patterns[informative, k], known_patterns[:, k]]), k))
            if h[k] is None:
                new_h.append(None)
            elif shared[k]:
                new_h.append(fitted(h[k], household_mass[informative], patterns[informative, k], k))
            else:
                new_h.append(fitted_person(household_mass[informative], patterns[informative, k], k))
        new_lam_m = _shrunk_rates(np.bincount(rule, weights=match_mass, minlength=n_rules), pairs_per_rule,
                                  rate_pseudo_pairs)
        new_lam_h = _shrunk_rates(np.bincount(rule, weights=household_mass, minlength=n_rules), pairs_per_rule,
                                  rate_pseudo_pairs) if household else None
        rate_change = float(np.max(np.abs(new_lam_m - lam_m), initial=0.0))
        change = max(rate_change, max(float(np.nanmax(np.abs(x - y))) for x, y in zip(new_m, m)))
        for x, y in zip(new_h, h):
            if x is not None:
                change = max(change, float(np.nanmax(np.abs(x - y))))
        if household:
            change = max(change, float(np.max(np.abs(new_lam_h - lam_h), initial=0.0)))
        m, h, lam_m, lam_h = new_m, new_h, new_lam_m, new_lam_h
        if change < tolerance or max(rate_change, posterior_change) < tolerance:
            converged = True
            break
    return EMFit(m, h, lam_m, lam_h, iteration, converged, log_likelihood)


# ---------------------------------------------------------------------------------------------
# Health check
# ---------------------------------------------------------------------------------------------
MIN_MATCH_RATE = 1e-6


def health_problems(model: FSModel, auto_merge: float | None = None) -> list[str]:
    """What makes a model unfit to merge on its own, one line each naming the rule or comparison
    and what to change:

    - a blocking rule whose pairs EM put at a match rate below 1e-6 (nothing it finds is a match);
    - EM did not converge;
    - m <= u at a comparison's exact (closest) level: agreeing there does not favour a match;
    - level weights that are not monotone: a closer level weighs less than a farther one;
    - a pair agreeing exactly on every compared field that would not reach auto_merge: the
      comparisons cannot tell people apart.
    """
    out = []
    training = model.training or {}
    for rule, session in (training.get("sessions") or {}).items():
        if session["pairs"] and session["match_rate"] < MIN_MATCH_RATE:
            out.append(f"blocking rule {rule!r}: EM put the match rate of its {session['pairs']:,} candidate pairs at "
                       f"{session['match_rate']:.2g}, so nothing it finds can link; check that its keys and the "
                       "comparisons describe the same people, or drop it")
    if training.get("converged") is False:
        out.append(f"EM did not converge in {training.get('iterations')} iterations; raise matching.model.max_iterations "
                   "or check the comparisons for a column that is nearly always missing")
    empty = set(training.get("comparisons_without_values") or [])
    for name in sorted(empty):
        out.append(f"comparison {name!r}: no sampled pair of records has both values (its column is empty, or its "
                   "normalizer made it missing: see the warnings); remove the comparison or fix the attribute's kind")
    for c in model.comparisons:
        top = 1
        if c.name in empty or uninformative(c):
            continue
        if c.m[top] <= c.u_random[top]:
            out.append(f"comparison {c.name!r}: m <= u at {c.labels[top]!r} ({c.m[top]:.3g} vs {c.u_random[top]:.3g}): "
                       "agreeing on it does not make a match more likely; check its column, or remove the comparison")
        if not is_monotone(c.m, c.u_random):
            out.append(f"comparison {c.name!r}: level weights are not monotone (a closer level weighs less than a "
                       "farther one); retrain the model instead of editing it, or reorder its thresholds")
    if auto_merge is not None and model.rules:
        levels = np.ones((1, len(model.comparisons)), dtype=np.int8)
        probability = float(probabilities(match_weights(model, levels, np.zeros(1, np.int64)))[0])
        if probability < auto_merge:
            out.append(f"a pair agreeing on every compared field scores only {probability:.3f} (< auto_merge "
                       f"{auto_merge:g}): the comparisons cannot tell people apart; compare more fields "
                       "(names, birth date, address)")
    return out


# At most this share of household pairs agree on a person field beyond chance (twins, juniors, a
# relative's value copied): any more, and the class would be people with a typo, not households.
MAX_COPIED = 0.1
COPIED_PRIOR_PAIRS = 1000.0

# Agreement this common among random pairs, with matches agreeing no more often, tells no one
# apart (a constant or nearly constant column, a flag); on a rarer value m <= u is a broken model.
UNINFORMATIVE_AGREEMENT = 0.1


def uninformative(c: ComparisonModel) -> bool:
    """Most random pairs agree exactly and matches agree no more often: the comparison weighs
    (about) nothing either way. Not a broken model: a note, not a health problem."""
    return bool(c.u_random[1] > UNINFORMATIVE_AGREEMENT and c.m[1] <= c.u_random[1] * 1.05)


def model_notes(model: FSModel) -> list[str]:
    """What is harmless but worth knowing about a trained model, one line each."""
    return [f"comparison {c.name!r}: {c.u_random[1]:.0%} of random pairs agree on it and matches no more often: it "
            "tells no one apart (a constant or nearly constant column); it weighs nothing and can be removed"
            for c in model.comparisons if uninformative(c)]


# ---------------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------------
def tf_adjustments(model: FSModel, prepared: list[PreparedComparison], levels, rule, left, keep=None):
    """(n_pairs, n_comparisons) extra bits for exact agreement on a rarer (or commoner) value than
    average: log2(u_random(exact) / frequency of the value), clipped to +/- TF_CLIP_BITS.
    Array-module generic (prepared comparisons in the same module as the levels)."""
    xp = module_of(levels)
    out = xp.zeros(levels.shape, dtype=xp.float64)
    neutral = xp.asarray(model.neutral)
    keep = kept_comparisons(model, levels, rule) if keep is None else keep
    for k, (c, p) in enumerate(zip(model.comparisons, prepared)):
        if not c.tf_adjust or p.frequency is None:
            continue
        exact = (levels[:, k] == c.labels.index("exact")) & ~neutral[rule, k] & keep[:, k]
        freq = p.frequency[left[exact]]
        u_exact = float(c.u_random[c.labels.index("exact")])
        out[exact, k] = xp.clip(xp.log2(u_exact / freq), -TF_CLIP_BITS, TF_CLIP_BITS)
    return out


def redundant_groups(model: FSModel) -> list[list[int]]:
    """Groups of comparisons that say one thing twice: places whose agreement goes together among
    random pairs (training's "associated_comparisons": an address and its street, a city and its
    postcode), joined transitively."""
    names = [c.name for c in model.comparisons]
    parent = list(range(len(names)))

    def root(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    for a, b in (model.training or {}).get("associated_comparisons") or []:
        if a in names and b in names:
            parent[root(names.index(a))] = root(names.index(b))
    groups: dict[int, list[int]] = {}
    for i in range(len(names)):
        groups.setdefault(root(i), []).append(i)
    return [g for g in groups.values() if len(g) > 1]


def _raw_weights(model: FSModel, levels, rule):
    xp = module_of(levels)
    out = xp.zeros(levels.shape, dtype=xp.float64)
    for k, table in enumerate(model.weight_table()):
        out[:, k] = xp.asarray(table)[rule, levels[:, k]]
    return out


def kept_comparisons(model: FSModel, levels, rule):
    """(n_pairs, n_comparisons) bool: which comparisons a pair's score counts. Of a group of
    redundant comparisons only the one whose level weighs most either way counts: a move that
    changes an address and its street is one fact, not two (conditional independence would count
    it twice)."""
    xp = module_of(levels)
    keep = xp.ones(levels.shape, dtype=bool)
    groups = redundant_groups(model)
    if not groups:
        return keep
    weights = xp.abs(_raw_weights(model, levels, rule))
    for group in groups:
        best = xp.argmax(weights[:, group], axis=1)
        for j, k in enumerate(group):
            keep[:, k] = best == j
    return keep


def comparison_weights(model: FSModel, levels, rule, keep=None):
    """(n_pairs, n_comparisons) weight of each pair's level under its rule (without tf); 0 for a
    comparison a redundant one speaks for (kept_comparisons, computed unless given)."""
    return _raw_weights(model, levels, rule) * (kept_comparisons(model, levels, rule) if keep is None else keep)


def softplus2(x):
    """log2(1 + 2^x), without overflow."""
    xp = module_of(x)
    return xp.maximum(x, 0.0) + xp.log2(1.0 + xp.exp2(-xp.abs(x)))


def household_adjustments(model: FSModel, levels, rule, tf=None, keep=None):
    """Per pair: -log2(1 + 2^H) (<= 0), H = the household prior + every field's log2(h/u) (+ the
    household fields' tf, values household members share): the bits a pair loses because a
    household explains it. Zero for a model without a household class."""
    xp = module_of(levels)
    if not model.has_household:
        return xp.zeros(len(levels), dtype=xp.float64)
    evidence = xp.asarray(model.household_prior_weights)[rule]
    keep = kept_comparisons(model, levels, rule) if keep is None else keep
    for k, table in enumerate(model.household_table()):
        if model.comparisons[k].h is None:
            continue
        evidence = evidence + xp.asarray(table)[rule, levels[:, k]] * keep[:, k]
        if tf is not None and model.comparisons[k].household_field:
            evidence = evidence + tf[:, k]
    return -softplus2(evidence)


def match_weights(model: FSModel, levels, rule, tf=None, keep=None):
    """Prior weight + each comparison's weight (+ tf) + the household adjustment, added left to
    right in one fixed order so that numpy and CuPy give the same sums. `keep`: kept_comparisons
    when the caller has it already (the tf it passes was made with it)."""
    xp = module_of(levels)
    keep = kept_comparisons(model, levels, rule) if keep is None else keep
    per_comparison = comparison_weights(model, levels, rule, keep)
    total = xp.asarray(model.prior_weights)[rule]
    for k in range(per_comparison.shape[1]):
        total = total + per_comparison[:, k]
    if tf is not None:
        for k in range(tf.shape[1]):
            total = total + tf[:, k]
    if model.has_household:
        total = total + household_adjustments(model, levels, rule, tf, keep)
    return total


def probabilities(weights):
    xp = module_of(weights)
    return 1.0 / (1.0 + xp.exp2(-xp.clip(weights, -1000, 1000)))
