"""Blocking rules chosen by their pair counts under a pair budget.

Candidates are the rules of Splink's tutorials and of configs/synthetic.yaml, over the detected
attributes only (`candidates`). Each candidate's keys are computed by the blocking code itself
(`resolver.matching.blocking.build_blocking_keys`, what `resolver plan` runs) on the sampled records, and
its pairs are counted from block sizes alone (`count`): with the whole file sampled, exactly
`resolver plan`'s count; with a sample, scaled to the whole file (a pair of sampled rows stands
for N(N-1) / (n(n-1)) pairs; a block's size for N / n records, which is what the block cap sees).

`choose` then picks a set:
1. a candidate is dropped when no record has all its keys, when most of its keyed records fall in
   blocks over `max_block_size` (a run skips those blocks: it finds little), or when it alone is
   over the budget;
2. the pairs every viable candidate makes in the sample are scored as a run would score them with
   a model nobody trained: each field that agrees exactly adds log2(m / u), each that differs by
   more than a typo log2((1 - m) / (1 - u)), with m = 0.9 and u the chance that two random records
   agree (from the field's value frequencies). A pair over log2(records), the prior odds against two records
   matching, that also agrees on one of the fields that tell household members apart (first name,
   birth date, ids, email) is a *probable match* (`probable_matches`);
3. greedily, the rule that finds the most probable matches no chosen rule finds per pair it makes
   (pairs + 1% of the budget: a tiny rule is not free), while the budget holds (ties: the earlier
   candidate), until no rule finds a new one or `MAX_RULES`;
4. if one field is still in every chosen rule (a typo there would hide a match from every rule),
   a viable rule without it is added when it fits: of those that find at least 95% of the most
   probable matches any of them finds, the one with the fewest pairs;
5. while rule slots and budget are left, the rule that keeps the most matches with typos in two
   fields (then three) that every chosen rule uses one of (it uses none of them), so that the
   rules cover each other's fields.
The total is a sum over rules, an upper bound: a run compares a pair found by several rules once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations
import numpy as np
import pandas as pd

from resolver.config import BlockingConfig, BlockingRule
from resolver.keys import parse_key
from resolver.kernels.strings import encode_for_comparison, jaro_winkler
from resolver.matching.blocking import build_blocking_keys, rule_pairs_of
from resolver.matching.growth import GROWTH_LIMIT, identifier_people, pair_growth

MAX_BLOCK_SIZE = 500  # the config default; the cap a run applies
MAX_RULES = 8
MAX_CANDIDATES = 64  # which candidates make a sampled pair is a 64-bit mask
PAIRS_PER_RECORD = 50
MIN_BUDGET = 1_000_000
DOB = "{dob}"  # stands for the birth date, or its parts

# (name, keys) in the order the tutorials put them: tight, exact-name rules first.
CANDIDATES: list[tuple[str, list[str]]] = [
    ("first_last", ["first_name", "last_name"]),
    ("full_name", ["full_name"]),
    ("last_dob", ["last_name", DOB]),
    ("first_dob", ["first_name", DOB]),
    ("email_local", ["email_local(email)"]),
    ("phone7", ["last_digits(phone, 7)"]),
    ("{id}", ["{id}"]),
    ("first_postcode", ["first_name", "postal_code"]),
    ("last_postcode", ["last_name", "postal_code"]),
    ("postcode_street_number", ["postal_code", "street_number"]),
    ("dob", [DOB]),
    ("phonetic_names_city", ["metaphone(first_name)", "metaphone(last_name)", "city"]),
    ("phonetic_full_name_city", ["metaphone(full_name)", "city"]),
    ("initials_dob", ["initials(first_name)", "initials(last_name)", DOB]),
    ("initials_full_name_dob", ["initials(full_name)", DOB]),
    ("swapped_names_dob", ["unordered(first_name, last_name)", DOB]),
    ("last_city", ["last_name", "city"]),
    ("street_postcode", ["street", "postal_code"]),
    ("street_number_street", ["street_number", "street"]),
]


def default_budget(records: int) -> int:
    """About 50 candidate pairs a record, at least 1M."""
    return max(MIN_BUDGET, PAIRS_PER_RECORD * records)


@dataclass
class Candidate:
    name: str
    keys: list[str]
    priority: int
    columns: frozenset[str] = field(init=False)
    keyed: float = 0.0  # share of the records with every key
    pairs: int = 0  # in the whole data, blocks within the cap
    capped: float = 0.0  # share of the keyed records in blocks over the cap
    largest: int = 0  # records in the largest block (estimated for the whole data)
    sample_pairs: int = 0  # pairs among the sampled records, blocks within the cap
    growth: float | None = None  # log-log slope of its pairs against the people (resolver/matching/growth.py)
    verdict: str = ""

    def __post_init__(self) -> None:
        self.columns = frozenset(c for k in self.keys for c in parse_key(k).columns)

    @property
    def rule(self) -> dict:
        return {"name": self.name, "keys": list(self.keys)}


def _dob_keys(attributes: set[str]) -> list[str] | None:
    if "birth_date" in attributes:
        return ["birth_date"]
    parts = [p for p in ("birth_year", "birth_month", "birth_day") if p in attributes]
    return parts or None


def candidates(attributes: dict[str, int], ids: list[str]) -> list[Candidate]:
    """The candidate rules over the attributes at hand (attribute -> how many sources have it;
    with several sources a rule needs attributes two of them share, or it links nothing)."""
    needed = 2 if max(attributes.values(), default=0) >= 2 else 1
    usable = {a for a, n in attributes.items() if n >= needed}
    dob = _dob_keys(usable)
    out: list[Candidate] = []
    for name, keys in CANDIDATES:
        for id_attr in (ids if "{id}" in keys else [None]):
            expanded: list[str] = []
            for key in keys:
                if key == DOB:
                    if dob is None:
                        break
                    expanded.extend(dob)
                else:
                    expanded.append(key.replace("{id}", id_attr) if id_attr else key)
            else:
                candidate = Candidate(name.replace("{id}", id_attr or ""), expanded, len(out))
                if candidate.columns <= usable:
                    out.append(candidate)
    return out[:MAX_CANDIDATES]


def measure_growth(cands: list[Candidate], keys: np.ndarray, identifiers: dict[str, pd.Series]) -> None:
    """Each candidate's pair-growth exponent on the sample (None where it makes too few pairs to
    tell), with the records the identifier columns join standing in for people."""
    n = keys.shape[1]
    records, values = [], []
    for k, values_of in enumerate(identifiers.values()):
        codes = pd.factorize(values_of.astype("str"))[0]
        held = np.flatnonzero(codes >= 0)
        records.append(held)
        values.append(codes[held] + (k << 40))  # one code space per identifier column
    people = identifier_people(np.concatenate(records) if records else np.zeros(0, np.int64),
                               np.concatenate(values) if values else np.zeros(0, np.int64), n)
    for c, row in zip(cands, keys):
        c.growth = pair_growth(row, people)


def count(cands: list[Candidate], attributes: dict[str, pd.Series], source: np.ndarray, sampled: list[int],
          rows: list[int], cap: int = MAX_BLOCK_SIZE, link_only: bool = False) -> np.ndarray:
    """Each candidate's keyed share, pairs and capped share in the whole data, from the sample's
    block sizes (per source: source s's sampled rows stand for rows[s] / sampled[s] records).
    Returns the sampled records' keys (candidates x records; 0 = no key, or a block over the cap)."""
    n = len(source)
    if not cands:
        return np.zeros((0, n), dtype=np.uint64)
    config = BlockingConfig(max_block_size=max(2, n + 1), rules=[BlockingRule(**c.rule) for c in cands])
    keys = build_blocking_keys(config, attributes, np.ones(n, dtype=bool), top=0).raw_keys.copy()
    f = np.asarray([r / max(s, 1) for r, s in zip(rows, sampled)], dtype=np.float64)
    g = np.asarray([r * (r - 1) / max(s * (s - 1), 1) for r, s in zip(rows, sampled)], dtype=np.float64)
    for c, row in zip(cands, keys):
        keyed = row != 0
        c.keyed = float(keyed.mean()) if n else 0.0
        if not keyed.any():
            continue
        block, inverse = np.unique(row[keyed], return_inverse=True)
        b = np.zeros((len(block), len(rows)), dtype=np.float64)  # records per block and source
        np.add.at(b, (inverse, source[keyed]), 1.0)
        size = b @ f
        within = 0.0 if link_only else (b * (b - 1) / 2) @ g
        cross = (size ** 2 - ((b * f) ** 2).sum(axis=1)) / 2
        raw_within = 0.0 if link_only else (b * (b - 1) / 2).sum(axis=1)
        raw_cross = (b.sum(axis=1) ** 2 - (b ** 2).sum(axis=1)) / 2
        over = size > cap
        c.pairs = int(round((within + cross)[~over].sum()))
        c.sample_pairs = int(round((raw_within + raw_cross)[~over].sum()))
        c.capped = float(size[over].sum() / size.sum())
        c.largest = int(round(size.max()))
        dropped = np.zeros(n, dtype=bool)
        dropped[np.flatnonzero(keyed)[over[inverse]]] = True
        row[dropped] = 0
    return keys


UNIVERSE_PAIRS = 20_000_000  # sampled pairs scored at most (records are subsampled beyond)
M_PROBABILITY = 0.9


def universe(cands: list[Candidate], keys: np.ndarray, source: np.ndarray, link_only: bool,
             max_pairs: int = UNIVERSE_PAIRS, seed: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every sampled pair some viable candidate makes: (left, right, bitmask of the candidates that
    make it). Beyond `max_pairs` a random share of the records is kept (pairs shrink as its square)."""
    n = keys.shape[1]
    sample_pairs = sum(c.sample_pairs for c in cands)
    keys = keys.copy()
    if sample_pairs > max_pairs:
        keep = np.random.default_rng(seed).random(n) < np.sqrt(max_pairs / sample_pairs)
        keys[:, ~keep] = 0
    labels = np.arange(n, dtype=np.int64)
    codes, masks = [], []
    for r in range(len(cands)):
        left, right = rule_pairs_of(keys[r:r + 1], 0, labels)
        left, right = left.astype(np.int64), right.astype(np.int64)
        if link_only:
            cross = source[left] != source[right]
            left, right = left[cross], right[cross]
        codes.append(left * n + right)
        masks.append(np.full(len(left), np.uint64(1) << np.uint64(r)))
    if not codes:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.uint64)
    code = np.concatenate(codes)
    mask = np.concatenate(masks)
    order = np.argsort(code, kind="stable")
    code, mask = code[order], mask[order]
    first = np.ones(len(code), dtype=bool)
    first[1:] = code[1:] != code[:-1]
    starts = np.flatnonzero(first)
    merged = np.bitwise_or.reduceat(mask, starts) if len(starts) else mask[:0]
    unique = code[starts]
    return unique // n, unique % n, merged


def _one_substitution(text: pd.Series, left: np.ndarray, right: np.ndarray, chunk: int = 1 << 20) -> np.ndarray:
    """Whether two values of equal length differ in exactly one character."""
    width = max(int(text.str.len().max()), 1)
    chars = np.array(text.fillna("").tolist(), dtype=f"<U{width}").view(np.int32).reshape(len(text), width)
    lengths = text.str.len().fillna(-1).to_numpy(np.int64)
    out = np.zeros(len(left), dtype=bool)
    for lo in range(0, len(left), chunk):
        a, b = left[lo:lo + chunk], right[lo:lo + chunk]
        out[lo:lo + chunk] = (lengths[a] == lengths[b]) & ((chars[a] != chars[b]).sum(axis=1) == 1)
    return out


def probable_matches(left: np.ndarray, right: np.ndarray, attributes: dict[str, pd.Series], records: int,
                     who: dict[str, bool] | None = None, m: float = M_PROBABILITY) -> np.ndarray:
    """Pairs whose fixed-m Fellegi-Sunter weight is above log2(records): a field that agrees adds
    log2(m / u), one that differs by a typo (words: Jaro-Winkler at least 0.85; dates, numbers and
    ids: one character) nothing, one that differs more log2((1 - m) / (1 - u)). A probable match
    also agrees on one of the `who` fields both records have, if they have any (first name, birth
    date, ids, email: what tells members of one household apart, who share a surname and an
    address); `who[field]` says whether a typo counts as agreeing there (not for ids: sequential
    ids of one household differ in one digit)."""
    who = who or {}
    weight = np.zeros(len(left))
    who_both, who_agree = np.zeros(len(left), dtype=bool), np.zeros(len(left), dtype=bool)
    for name, values in attributes.items():
        text = values.astype("str").reset_index(drop=True)
        codes = pd.factorize(text)[0]
        valid = codes >= 0
        if valid.sum() < 2:
            continue
        share = np.bincount(codes[valid]) / valid.sum()
        u = float(min(max((share ** 2).sum(), 1e-9), 0.5))
        both = valid[left] & valid[right]
        agree = both & (codes[left] == codes[right])
        near = np.zeros(len(left), dtype=bool)
        rows = np.flatnonzero(both & ~agree)
        if len(rows) and text.str.contains("[^\\W\\d_]", regex=True).mean() > 0.5:  # words: a typo
            near[rows] = jaro_winkler(encode_for_comparison(text), left[rows], right[rows]) >= 0.85
        elif len(rows):  # dates, numbers, ids: one character changed (siblings' birth dates are not near)
            near[rows] = _one_substitution(text, left[rows], right[rows])
        weight += np.where(agree, np.log2(m / u), np.where(both & ~near, np.log2((1 - m) / (1 - u)), 0.0))
        if name in who:  # who[name]: whether a typo counts (names, dates), or only equal values (ids)
            who_both |= both
            who_agree |= agree | (near & who[name])
    return (weight > np.log2(max(records, 2))) & (who_agree | ~who_both)


def choose(cands: list[Candidate], budget: int, found: dict[str, np.ndarray] | None = None,
           max_rules: int = MAX_RULES) -> list[Candidate]:
    """The chosen candidates, in candidate order; every candidate gets its verdict. `found` holds,
    per candidate name, which probable matches (one bool per pair, same pairs for all) it finds."""
    viable = []
    for c in cands:
        if c.keyed == 0:
            c.verdict = "dropped: no record has all its keys"
        elif c.capped > 0.5:
            c.verdict = f"dropped: {c.capped:.0%} of its records are in blocks over the cap (largest ~{c.largest:,})"
        elif c.pairs > budget:
            c.verdict = f"dropped: {c.pairs:,} pairs alone, over the budget"
        elif c.growth is not None and c.growth > GROWTH_LIMIT:
            c.verdict = (f"dropped: its pairs grow as records^{c.growth:.2f} (its blocks grow with the population: "
                         "pairs a record would not stay flat on more data)")
        elif c.pairs == 0:
            c.verdict = "dropped: no pairs"
        else:
            viable.append(c)
    found = found or {}
    width = max((len(v) for v in found.values()), default=0)
    none = np.zeros(width, dtype=bool)
    total_matches = int(np.logical_or.reduce([found.get(c.name, none) for c in viable] or [none]).sum())
    covered = none.copy()
    chosen: list[Candidate] = []
    total = 0

    floor = budget / 100  # a rule costs at least 1% of the budget: tiny rules are not free

    def gain(c: Candidate) -> int:
        return int((found.get(c.name, none) & ~covered).sum())

    while len(chosen) < max_rules:
        fits = [c for c in viable if c not in chosen and total + c.pairs <= budget]
        scored = [(gain(c) / (c.pairs + floor), gain(c), -c.priority, c) for c in fits]
        scored = [s for s in scored if s[1] > 0 or not chosen]
        if not scored:
            break
        _, new, _, best = max(scored, key=lambda s: (s[0], s[1], s[2]))
        best.verdict = ("chosen 1st: the first viable rule (no probable match to count)" if not total_matches else
                        f"chosen {_ordinal(len(chosen) + 1)}: finds {new:,} of the {total_matches:,} probable matches"
                        + (" the rules chosen before it miss" if chosen else ""))
        chosen.append(best)
        covered |= found.get(best.name, none)
        total += best.pairs
    common = weak_fields(chosen)
    if common:
        spare = [c for c in viable if c not in chosen and c.columns.isdisjoint(common) and total + c.pairs <= budget]
        if spare:
            most = max(int(found.get(c.name, none).sum()) for c in spare)
            close = [c for c in spare if found.get(c.name, none).sum() >= 0.95 * most]  # then the cheapest
            best = min(close, key=lambda c: (c.pairs, c.priority))
            best.verdict = (f"chosen {_ordinal(len(chosen) + 1)}: every other rule uses {', '.join(common)}; "
                            "this one does not (typos there)")
            chosen.append(best)
            total += best.pairs
    for size in (2, 3):  # rule slots and budget left: matches with typos in two, then three fields
        while len(chosen) < max_rules:
            errors = _uncovered(viable, chosen, size)
            spare = [(sum(c.columns.isdisjoint(e) for e in errors), int(found.get(c.name, none).sum()), -c.pairs, c)
                     for c in viable if c not in chosen and total + c.pairs <= budget]
            spare = [s for s in spare if s[0] > 0]
            if not spare:
                break
            covers, _, _, best = max(spare, key=lambda s: s[:3])
            example = " + ".join(sorted(next(e for e in errors if best.columns.isdisjoint(e))))
            best.verdict = (f"chosen {_ordinal(len(chosen) + 1)}: no rule chosen before it keeps a match with typos "
                            f"in {example} ({covers} such combinations of {size} fields)")
            chosen.append(best)
            total += best.pairs
    for c in viable:
        if c not in chosen:
            over = total + c.pairs > budget
            c.verdict = (f"left out: {c.pairs:,} more pairs would pass the budget" if over and gain(c)
                         else "left out: the rule limit" if gain(c) else
                         "not needed: every probable match it finds, a chosen rule finds")
    return sorted(chosen, key=lambda c: c.priority)


def _uncovered(viable: list[Candidate], chosen: list[Candidate], size: int) -> list[frozenset[str]]:
    """Sets of `size` fields (of those the viable rules use) that every chosen rule uses one of:
    typos in all of them would hide a match from every chosen rule."""
    fields = sorted(set().union(*(c.columns for c in viable)) if viable else set())
    return [frozenset(e) for e in combinations(fields, size) if not any(c.columns.isdisjoint(e) for c in chosen)]


def _ordinal(n: int) -> str:
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


def weak_fields(chosen: list[Candidate]) -> list[str]:
    """Fields every chosen rule uses: a typo there hides a match from blocking."""
    if not chosen:
        return []
    common = set(chosen[0].columns)
    for c in chosen[1:]:
        common &= c.columns
    return sorted(common)
