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

from resolver.compare import NULL_LEVEL, PreparedComparison

MODEL_FORMAT = 1
PROBABILITY_FLOOR = 1e-6
TF_CLIP_BITS = 10.0


class ModelError(ValueError):
    """A saved model that cannot be used with this configuration."""


@dataclass
class ComparisonModel:
    name: str
    method: str
    labels: list[str]
    m: np.ndarray  # per level (index 0 = null, unused)
    u: np.ndarray  # per level, among candidate non-matches (== u_random when u is fixed)
    u_random: np.ndarray  # per level, over random record pairs
    tf_adjust: bool = False

    def weights(self) -> np.ndarray:
        """log2(m/u) per level; the null level weighs nothing."""
        w = np.log2(np.maximum(self.m, PROBABILITY_FLOOR) / np.maximum(self.u, PROBABILITY_FLOOR))
        w[NULL_LEVEL] = 0.0
        return w


@dataclass
class FSModel:
    comparisons: list[ComparisonModel]
    candidate_match_rate: float  # share of candidate pairs that match (EM's lambda)
    prior: float  # probability that two random records match
    training: dict = field(default_factory=dict)  # iterations, converged, pairs, warnings...

    @property
    def prior_weight(self) -> float:
        lam = min(max(self.candidate_match_rate, 1e-12), 1 - 1e-12)
        return float(np.log2(lam / (1 - lam)))

    def weight_table(self) -> list[np.ndarray]:
        return [c.weights() for c in self.comparisons]

    # -- persistence ---------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "format": MODEL_FORMAT,
            "candidate_match_rate": self.candidate_match_rate,
            "prior": self.prior,
            "prior_weight": self.prior_weight,
            "comparisons": [
                {
                    "name": c.name, "method": c.method, "tf_adjust": c.tf_adjust,
                    "levels": [
                        {"label": label, "m": float(c.m[i]), "u": float(c.u[i]), "u_random": float(c.u_random[i]),
                         "weight": float(w)}
                        for i, (label, w) in enumerate(zip(c.labels, c.weights()))
                        if i != NULL_LEVEL
                    ],
                }
                for c in self.comparisons
            ],
            "training": self.training,
        }

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: Path, prepared: list[PreparedComparison]) -> "FSModel":
        """A saved model; its comparisons and levels must be exactly the configured ones."""
        try:
            raw = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ModelError(f"{path}: cannot read model: {exc}") from exc
        if raw.get("format") != MODEL_FORMAT:
            raise ModelError(f"{path}: model format {raw.get('format')!r}, expected {MODEL_FORMAT}")
        saved = [(c["name"], ["null"] + [lv["label"] for lv in c["levels"]]) for c in raw["comparisons"]]
        wanted = [(p.name, p.labels) for p in prepared]
        if saved != wanted:
            raise ModelError(f"{path}: the model's comparisons {saved} differ from the configuration's {wanted}")
        comparisons = []
        for c, p in zip(raw["comparisons"], prepared):
            def column(key: str) -> np.ndarray:
                return np.array([np.nan] + [lv[key] for lv in c["levels"]])
            comparisons.append(ComparisonModel(c["name"], c["method"], p.labels, column("m"), column("u"),
                                               column("u_random"), p.config.tf_adjust))
        return cls(comparisons, raw["candidate_match_rate"], raw["prior"], raw.get("training", {}))


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


def random_pairs(active: np.ndarray, n_pairs: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Uniform random pairs of distinct active records."""
    rng = np.random.default_rng(seed)
    pool = np.flatnonzero(active)
    if len(pool) < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    a = pool[rng.integers(0, len(pool), n_pairs)]
    b = pool[rng.integers(0, len(pool), n_pairs)]
    keep = a != b
    return a[keep], b[keep]


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


def pattern_counts(levels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct rows of the level matrix and how many pairs have each."""
    if len(levels) == 0:
        return levels, np.zeros(0, np.int64)
    patterns, counts = np.unique(levels, axis=0, return_counts=True)
    return patterns, counts


def _log_likelihoods(patterns: np.ndarray, probs: list[np.ndarray]) -> np.ndarray:
    out = np.zeros(len(patterns))
    for k, p in enumerate(probs):
        logs = np.log(np.maximum(np.nan_to_num(p, nan=1.0), PROBABILITY_FLOOR))
        logs[NULL_LEVEL] = 0.0
        out += logs[patterns[:, k]]
    return out


def expectation_maximisation(patterns: np.ndarray, counts: np.ndarray, m0: list[np.ndarray], u0: list[np.ndarray],
                             lambda0: float, fix_u: bool, max_iterations: int, tolerance: float,
                             known: tuple[np.ndarray, np.ndarray] | None = None):
    """EM over level patterns. Returns m, u, lambda, iterations, converged, history of lambda.

    `known` (patterns, counts) are pairs known to match (deterministic persons): they enter every
    M-step for m with weight 1, which anchors the match class on people, not households.
    Comparisons the known pairs were selected on should be given as level 0 (null) there.
    """
    m = [x.copy() for x in m0]
    u = [x.copy() for x in u0]
    lam = float(lambda0)
    counts = counts.astype(np.float64)
    if known is not None and len(known[0]):
        all_patterns = np.concatenate([patterns, known[0]])
        known_mass = known[1].astype(np.float64)
    else:
        all_patterns, known_mass = patterns, np.zeros(0)
    history = []
    converged = False
    iteration = 0
    for iteration in range(1, max_iterations + 1):
        logit = np.log(lam) - np.log1p(-lam) + _log_likelihoods(patterns, m) - _log_likelihoods(patterns, u)
        w = 1.0 / (1.0 + np.exp(-np.clip(logit, -700, 700)))
        match_mass = counts * w
        mass = np.concatenate([match_mass, known_mass])
        new_m = [level_distribution(all_patterns[:, k], len(m[k]), mass, pseudo=1e-3) for k in range(len(m))]
        new_u = u if fix_u else [level_distribution(patterns[:, k], len(u[k]), counts - match_mass, pseudo=1e-3)
                                 for k in range(len(u))]
        new_lam = float(np.clip(match_mass.sum() / max(counts.sum(), 1.0), 1e-9, 1 - 1e-9))
        change = max(np.nanmax(np.abs(a - b)) for a, b in zip(new_m + new_u, m + u))
        m, u, lam = new_m, new_u, new_lam
        history.append(lam)
        if change < tolerance:
            converged = True
            break
    return m, u, lam, iteration, converged, history


def training_warnings(comparisons: list[ComparisonModel]) -> list[str]:
    """The EM guard: exact agreement must favour a match and total disagreement must not."""
    out = []
    for c in comparisons:
        exact = c.labels.index("exact") if "exact" in c.labels else 1
        if c.m[exact] <= c.u[exact]:
            out.append(f"comparison {c.name!r}: m <= u at {c.labels[exact]!r} ({c.m[exact]:.3g} vs {c.u[exact]:.3g}); "
                       "EM may have learned households instead of people")
        if c.labels[-1] == "else" and c.m[-1] >= c.u[-1]:
            out.append(f"comparison {c.name!r}: m >= u at 'else' ({c.m[-1]:.3g} vs {c.u[-1]:.3g}); "
                       "disagreement does not count against a match")
    return out


# ---------------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------------
def tf_adjustments(model: FSModel, prepared: list[PreparedComparison], levels: np.ndarray,
                   left: np.ndarray) -> np.ndarray:
    """(n_pairs, n_comparisons) extra bits for exact agreement on a rarer (or commoner) value than
    average: log2(u_random(exact) / frequency of the value), clipped to +/- TF_CLIP_BITS."""
    out = np.zeros(levels.shape, dtype=np.float64)
    for k, (c, p) in enumerate(zip(model.comparisons, prepared)):
        if not c.tf_adjust or p.frequency is None:
            continue
        exact = levels[:, k] == c.labels.index("exact")
        freq = p.frequency[left[exact]]
        out[exact, k] = np.clip(np.log2(c.u_random[c.labels.index("exact")] / freq), -TF_CLIP_BITS, TF_CLIP_BITS)
    return out


def match_weights(model: FSModel, levels: np.ndarray, tf: np.ndarray | None = None) -> np.ndarray:
    total = np.full(len(levels), model.prior_weight)
    for k, w in enumerate(model.weight_table()):
        total += w[levels[:, k]]
    if tf is not None:
        total += tf.sum(axis=1)
    return total


def probabilities(weights: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp2(-np.clip(weights, -1000, 1000)))
