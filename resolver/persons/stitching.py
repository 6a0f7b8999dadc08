"""Anonymous visitor stitching: which known person an anonymous id (a Segment anonymousId, a GA4
client id, a Tealium visitor id, an Adobe ECID) that never authenticated belongs to.

Deterministic stitching is the identity graph's: a login or alias event that carries an anonymous
id and a known id links them, under the graph's guards (a shared kiosk's id is a hub and links no
one). What is left are anonymous ids whose person holds no CRM record or user id. For those:

1. **Sessions** (at ingest, per file, resolver/ingest/sessions.py: per-event rows never outlive this step): each anonymous id's
   events split where the inactivity gap exceeds `session_gap_minutes`; a session keeps its start,
   end, event count, first IP, user agent, screen, city and country, and a MinHash signature of its
   visited pages (path only).
2. **Candidates** (anonymous id, known person) from: the same IP within `window_days` (IPs seen with
   more than `nat_degree` anonymous ids are carrier / corporate NAT or VPN exits: never a key), the
   same /24 (capped likewise), and LSH bands of the page signatures.
3. **Features** per pair, as comparison levels: network (same IP / same /24 / none), time gap of the
   closest sessions on a shared network (within an hour / a day / the window / beyond), device
   (same fingerprint / same platform: OS and device class parsed by ua-parser / different), geography
   (same city / same country / different), pages (MinHash Jaccard: >= 0.5 / >= 0.25 / > 0 / 0).
   A missing value is the null level (no evidence either way).
4. **Scoring** by a Fellegi-Sunter model trained without labels: m starts from (and, given enough,
   is fixed to) pairs of an anonymous id that *did* authenticate and its own person, compared as if
   it had not (the person's other ids only); u from random (anonymous id, person) pairs; EM
   estimates the match rate among the candidates. >= `thresholds.auto_merge` stitches,
   the review band goes to the stitching review queue with its per-feature explanation, below stays
   anonymous; each anonymous id joins at most one person (its best candidate).
5. **Guards** send a high score to review instead: a runner-up that could claim the id too, pages
   without a shared network, a rule no labels support, and a household: when the evidence is a
   shared network and the candidate shares a postal address with other persons, the device may be
   any member's (a housemate's phone, the family tablet), and only a person can tell.

Stitches are an overlay: persons and the identifier map stay the deterministic graph's;
anonymous_map.parquet says which person each anonymous id (and its sessions and events) is
attributed to, how, and how sure.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd

from resolver.compute.backend import CPU, Backend, scatter_min, to_host
from resolver.kernels import minhash
from resolver.matching.model import (
    M_FLOOR,
    ComparisonModel,
    FSModel,
    fit_em,
    floored,
    level_distribution,
    match_weights,
    pattern_counts,
    probabilities,
)
from resolver.normalize import normalize_text

FEATURES = {
    "network": ["null", "none", "same /24", "same IP"],
    "time": ["null", "beyond window", "within window", "within a day", "within an hour"],
    "device": ["null", "different", "same platform", "same fingerprint"],
    "geo": ["null", "different", "same country", "same city"],
    "pages": ["null", "disjoint", "some overlap", "similar", "very similar"],
}
# How a candidate was found (the first way wins), and the feature each way selects on: that
# feature is neutral for its candidates (they agree on it by construction), and u and the match
# rate are estimated per way, as the record model does per blocking rule.
CANDIDATE_RULES = ("same IP", "same /24", "similar pages")
_SELECTED_ON = {"same IP": "network", "same /24": "network", "similar pages": "pages"}
_NS_PER_HOUR = 3600 * 10**9
_NO_GAP = np.iinfo(np.int64).max  # no sessions on a shared network at all
_JOIN_SLICE = 100_000  # left-side sessions joined at once on one network value
_PAIR_SLICE = 50_000  # candidate pairs whose evidence is gathered at once


# ---------------------------------------------------------------------------------------------
# Stitching (after the persons are resolved)
# ---------------------------------------------------------------------------------------------
@dataclass
class StitchResult:
    anonymous_map: pd.DataFrame
    review: pd.DataFrame
    summary: dict


@lru_cache(maxsize=65536)
def _platform(user_agent: str) -> str:
    from ua_parser import parse

    parsed = parse(user_agent)
    os_family = parsed.os.family if parsed.os else "Other"
    device = parsed.device.family if parsed.device else "Other"
    kind = "tablet" if "iPad" in user_agent or "Tablet" in user_agent else \
        "mobile" if any(k in user_agent for k in ("Mobile", "iPhone", "Android")) else "desktop"
    return f"{os_family}|{kind}|{device if kind != 'desktop' else ''}"


def platforms(user_agents: pd.Series) -> pd.Series:
    """OS family, device class and (for phones and tablets) device model, from ua-parser."""
    codes, uniques = pd.factorize(user_agents.astype("str"))
    parsed = np.array([_platform(u) for u in uniques], dtype=object)
    out = np.where(codes >= 0, parsed[np.maximum(codes, 0)] if len(parsed) else None, None)
    return pd.Series(out, dtype="str")


def _subnet(ip: pd.Series) -> pd.Series:
    text = ip.astype("str")
    v4 = text.str.extract(r"^(\d+\.\d+\.\d+)\.\d+$")[0]
    return v4.where(v4.isna(), v4 + ".0/24")


def _prepare_sessions(sessions: pd.DataFrame, owner: pd.Series) -> pd.DataFrame:
    s = sessions.reset_index(drop=True).copy()
    s["person"] = owner.to_numpy()
    s["subnet"] = _subnet(s["ip"])
    s["fingerprint"] = (s["user_agent"].astype("str") + "|" + s["screen"].astype("str").fillna("")).where(
        s["user_agent"].notna())
    s["platform"] = platforms(s["user_agent"]).where(s["user_agent"].notna())
    return s


def _degree(sessions: pd.DataFrame, column: str) -> pd.Series:
    """Distinct anonymous ids per value of `column`."""
    return sessions[["anon_hash", column]].dropna().drop_duplicates().groupby(column).size()


def _signatures(sessions: pd.DataFrame, by: list[str], permutations: int) -> pd.DataFrame:
    columns = [f"mh{i}" for i in range(permutations)]
    return sessions.groupby(by, sort=True)[columns].min()


def _network_candidates(unknown: pd.DataFrame, known: pd.DataFrame, column: str, window_ns: int,
                        shared: set) -> pd.DataFrame:
    """(anon_hash, person, gap) for unknown and known sessions on the same network value within
    the window (values in `shared` are NAT / carrier exits: skipped)."""
    left = unknown[["anon_hash", column, "start", "end"]].dropna(subset=[column])
    left = left[~left[column].isin(shared)]
    right = known[["person", "anon_hash", column, "start", "end"]].dropna(subset=[column])
    # Session pairs on one value grow with the square of its sessions (a home IP holds every
    # session of a family's devices): join a slice of the left side at a time and keep only each
    # slice's closest gap per (anon_hash, person), so memory stays bounded by the slice.
    found = []
    for start in range(0, len(left), _JOIN_SLICE):
        joined = left.iloc[start:start + _JOIN_SLICE].merge(right, on=column, suffixes=("", "_k"))
        joined = joined[joined["anon_hash"] != joined["anon_hash_k"]]
        gap = np.maximum(0, np.maximum(joined["start"].to_numpy(), joined["start_k"].to_numpy())
                         - np.minimum(joined["end"].to_numpy(), joined["end_k"].to_numpy()))
        close = gap <= window_ns
        found.append(pd.DataFrame({"anon_hash": joined["anon_hash"].to_numpy()[close],
                                   "person": joined["person"].to_numpy()[close], "gap": gap[close]}))
    if not found:
        return pd.DataFrame({"anon_hash": np.zeros(0, np.uint64), "person": pd.Series(dtype="str"),
                             "gap": np.zeros(0, np.int64)})
    joined = pd.concat(found, ignore_index=True)
    return joined.groupby(["anon_hash", "person"], sort=False)["gap"].min().reset_index()


def _band_candidates(unknown_sig: pd.DataFrame, known_sig: pd.DataFrame, bands: int, cap: int,
                     xp=np) -> pd.DataFrame:
    """(anon_hash, person) sharing a whole band of their page signatures (buckets of more than
    `cap` persons are too common to mean anything). The band keys are computed on `xp`."""
    permutations = unknown_sig.shape[1]
    rows = max(1, permutations // bands)
    left_sig, right_sig = (xp.asarray(frame.to_numpy(np.uint32)) for frame in (unknown_sig, known_sig))
    found = []
    for b in range(0, permutations, rows):
        stop = min(b + rows, permutations)
        left = pd.DataFrame({"anon_hash": unknown_sig.index.to_numpy(),
                             "band": to_host(minhash.band_keys(left_sig, b, stop))})
        right = pd.DataFrame({"person": known_sig.index.to_numpy(), "band": to_host(minhash.band_keys(right_sig, b, stop))})
        left, right = left[left["band"] != 0], right[right["band"] != 0]
        sizes = right.groupby("band").size()
        right = right[right["band"].map(sizes) <= cap]
        found.append(left.merge(right, on="band")[["anon_hash", "person"]])
    if not found:
        return pd.DataFrame({"anon_hash": np.zeros(0, np.uint64), "person": pd.Series(dtype="str")})
    return pd.concat(found, ignore_index=True).drop_duplicates()


def _candidates(anonymous: pd.DataFrame, known: pd.DataFrame, shared_ips: set, shared_subnets: set, window_ns: int,
                options, xp=np) -> pd.DataFrame:
    """(anon_hash, person, rule) candidates for the anonymous ids of `anonymous` sessions, each found
    by the first CANDIDATE_RULES way that finds it, sorted."""
    # (A device fingerprint is no key: popular phones share user agent and screen by the million;
    # it is a feature of the candidates the network and the pages find.)
    candidates = [_network_candidates(anonymous, known, "ip", window_ns, shared_ips)[["anon_hash", "person"]],
                  _network_candidates(anonymous, known, "subnet", window_ns, shared_subnets)[["anon_hash", "person"]]]
    candidates.append(_band_candidates(_signatures(anonymous, ["anon_hash"], options.permutations),
                                       _signatures(known, ["person"], options.permutations), options.bands,
                                       options.band_bucket_cap, xp))
    pairs = pd.concat([c.assign(rule=np.int64(r)) for r, c in enumerate(candidates)], ignore_index=True)
    pairs = pairs.drop_duplicates(["anon_hash", "person"]).sort_values(["anon_hash", "person"], kind="stable")
    return pairs.reset_index(drop=True)


@dataclass(frozen=True)
class PairEvidence:
    """What joining a pair's sessions found: per pair (host numpy, n entries) the flags of the
    device and place features, and per joined row the (pair, value) facts the levels reduce over.
    The joins are pandas; `feature_levels` turns this into levels on any array module."""

    n: int
    has_network: np.ndarray  # the anonymous id has an IP at all
    ip_pair: np.ndarray  # (pair, gap of the two sessions) for every session pair on one IP
    ip_gap: np.ndarray
    subnet_pair: np.ndarray  # the same on one /24
    subnet_gap: np.ndarray
    same_fingerprint: np.ndarray
    has_device: np.ndarray  # both sides have a user agent
    same_platform: np.ndarray
    same_city: np.ndarray
    same_country: np.ndarray
    has_place: np.ndarray  # both sides have a city or a country
    anon_pair: np.ndarray  # (pair, signature) for every session of the pair's anonymous id
    anon_sig: np.ndarray
    person_pair: np.ndarray  # ... and of the person's other ids
    person_sig: np.ndarray


def _evidence(pairs: pd.DataFrame, unknown: pd.DataFrame, known: pd.DataFrame, shared_ips: set, shared_subnets: set,
              permutations: int) -> PairEvidence:
    """The joins behind the features of each (anon_hash, person) pair; the person's sessions of the
    pair's own anonymous id never count (so an authenticated id can be compared as if it were not)."""
    n = len(pairs)
    index = pairs[["anon_hash", "person"]].reset_index(drop=True).assign(pair=np.arange(n))
    mine = unknown.drop(columns="person").merge(index, on="anon_hash")  # the pair's anonymous sessions
    theirs = known.merge(index[["person", "pair", "anon_hash"]].rename(columns={"anon_hash": "own"}), on="person")
    theirs = theirs[theirs["anon_hash"] != theirs["own"]]

    def session_gaps(column: str, shared: set) -> tuple[np.ndarray, np.ndarray]:
        left = mine[["pair", column, "start", "end"]].dropna(subset=[column])
        left = left[~left[column].isin(shared)]
        right = theirs[["pair", column, "start", "end"]].dropna(subset=[column])
        joined = left.merge(right, on=["pair", column], suffixes=("", "_k"))
        gap = np.maximum(0, np.maximum(joined["start"].to_numpy(), joined["start_k"].to_numpy())
                         - np.minimum(joined["end"].to_numpy(), joined["end_k"].to_numpy()))
        return joined["pair"].to_numpy(np.int64), gap.astype(np.int64)

    def shares(column: str) -> tuple[np.ndarray, np.ndarray]:
        left = mine[["pair", column]].dropna().drop_duplicates()
        right = theirs[["pair", column]].dropna().drop_duplicates()
        hit = np.zeros(n, bool)
        hit[left.merge(right, on=["pair", column])["pair"].to_numpy()] = True
        known_side = np.zeros(n, bool)
        known_side[left["pair"].to_numpy()] = True
        known_other = np.zeros(n, bool)
        known_other[right["pair"].to_numpy()] = True
        return hit, known_side & known_other

    ip_pair, ip_gap = session_gaps("ip", shared_ips)
    subnet_pair, subnet_gap = session_gaps("subnet", shared_subnets)
    has_network = np.zeros(n, bool)
    has_network[mine.loc[mine["ip"].notna(), "pair"].to_numpy()] = True
    same_fp, has_device = shares("fingerprint")
    same_platform, _ = shares("platform")
    same_city, has_city = shares("city")
    same_country, has_country = shares("country")
    columns = [f"mh{i}" for i in range(permutations)]
    return PairEvidence(n, has_network, ip_pair, ip_gap, subnet_pair, subnet_gap, same_fp, has_device, same_platform,
                        same_city, same_country, has_city | has_country,
                        mine["pair"].to_numpy(np.int64), mine[columns].to_numpy(np.uint32),
                        theirs["pair"].to_numpy(np.int64), theirs[columns].to_numpy(np.uint32))


def _pair_min(xp, n: int, pair, values, fill):
    """Per pair, the least of its rows' values (`fill` for a pair without rows); rows 1-D or 2-D."""
    out = xp.full((n,) + tuple(values.shape[1:]), fill, dtype=values.dtype)
    if len(pair):
        scatter_min(xp, out, xp.asarray(pair), xp.asarray(values))
    return out


def _level(xp, conditions, levels, default):
    """The level of the first true condition (np.select, spelt with where for any xp)."""
    out = xp.full(conditions[0].shape, default, dtype=xp.int8)
    for condition, level in zip(reversed(conditions), reversed(levels)):
        out = xp.where(condition, xp.int8(level), out)
    return out


def feature_levels(xp, ev: PairEvidence, window_ns: int, permutations: int):
    """(n_pairs, 5) int8 levels of FEATURES on array module `xp`: integer arithmetic only, so
    numpy and CuPy give the same levels."""
    ip_gap = _pair_min(xp, ev.n, ev.ip_pair, ev.ip_gap, _NO_GAP)
    subnet_gap = _pair_min(xp, ev.n, ev.subnet_pair, ev.subnet_gap, _NO_GAP)
    has_network = xp.asarray(ev.has_network)
    network = _level(xp, [ip_gap <= window_ns, subnet_gap <= window_ns, has_network], [3, 2, 1], 0)
    gap = xp.minimum(ip_gap, subnet_gap)
    time = _level(xp, [gap <= _NS_PER_HOUR, gap <= 24 * _NS_PER_HOUR, gap <= window_ns, gap < _NO_GAP], [4, 3, 2, 1], 0)
    same_fp, same_platform, has_device = (xp.asarray(a) for a in (ev.same_fingerprint, ev.same_platform,
                                                                  ev.has_device))
    device = _level(xp, [~has_device, same_fp, same_platform], [0, 3, 2], 1)
    geo = _level(xp, [xp.asarray(ev.same_city), xp.asarray(ev.same_country), xp.asarray(ev.has_place)], [3, 2, 1], 0)
    a_sig = _pair_min(xp, ev.n, ev.anon_pair, ev.anon_sig, minhash.EMPTY)
    p_sig = _pair_min(xp, ev.n, ev.person_pair, ev.person_sig, minhash.EMPTY)
    both = (a_sig != minhash.EMPTY).any(axis=1) & (p_sig != minhash.EMPTY).any(axis=1)
    agree = minhash.agreements(a_sig, p_sig)  # Jaccard estimate agree / permutations, compared exactly
    pages = _level(xp, [~both, 2 * agree >= permutations, 4 * agree >= permutations, agree > 0], [0, 4, 3, 2], 1)
    return xp.stack([network, time, device, geo, pages], axis=1)


def _features(pairs: pd.DataFrame, unknown: pd.DataFrame, known: pd.DataFrame, shared_ips: set, shared_subnets: set,
              window_ns: int, permutations: int, xp=np):
    """(n_pairs, 5) levels of FEATURES for each (anon_hash, person) pair, as an `xp` array. Pairs
    are taken a slice at a time: each pair's evidence joins all its sessions with all its person's,
    so memory stays bounded by the slice, and a pair's levels depend on that pair alone."""
    if len(pairs) == 0:
        return feature_levels(xp, _evidence(pairs, unknown, known, shared_ips, shared_subnets, permutations),
                              window_ns, permutations)
    levels = []
    for start in range(0, len(pairs), _PAIR_SLICE):
        piece = pairs.iloc[start:start + _PAIR_SLICE]
        evidence = _evidence(piece, unknown, known, shared_ips, shared_subnets, permutations)
        levels.append(feature_levels(xp, evidence, window_ns, permutations))
    return xp.concatenate(levels) if len(levels) > 1 else levels[0]


def _model(levels: np.ndarray, rule: np.ndarray, labelled: np.ndarray, labelled_rule: np.ndarray, is_match: np.ndarray,
           random: np.ndarray, options) -> object:
    """The stitching model: m from labelled matches, u per rule from labelled non-matches (random
    pairs where a rule has too few), the match rate per rule from the labels; EM (m held where
    labelled) only for what the labels leave open."""

    names = list(FEATURES)
    n_levels = [len(FEATURES[f]) for f in names]
    n_rules = len(CANDIDATE_RULES)
    minimum = options.labelled_min_pairs
    u_random = [level_distribution(random[:, k], n_levels[k]) for k in range(len(names))]
    labelled = labelled.copy()
    for r, way in enumerate(CANDIDATE_RULES):  # a rule's pairs agree on what it selects on: no evidence there
        labelled[labelled_rule == r, names.index(_SELECTED_ON[way])] = 0
    matches, non_matches = labelled[is_match], labelled[~is_match]
    fixed, m0 = [], []
    for k in range(len(names)):
        informative = int((matches[:, k] > 0).sum()) if len(matches) else 0
        fixed.append(informative >= minimum)
        start = level_distribution(matches[:, k], n_levels[k]) if informative else \
            np.concatenate([[np.nan], np.linspace(1, 3, n_levels[k] - 1) / np.linspace(1, 3, n_levels[k] - 1).sum()])
        m0.append(floored(start, M_FLOOR))
    neutral = np.zeros((n_rules, len(names)), dtype=bool)
    for r, way in enumerate(CANDIDATE_RULES):
        neutral[r, names.index(_SELECTED_ON[way])] = True
    u = []
    for k in range(len(names)):
        table = np.tile(u_random[k], (n_rules, 1))
        for r in range(n_rules):
            mine = non_matches[labelled_rule[~is_match] == r, k]
            if int((mine > 0).sum()) >= minimum:
                table[r] = level_distribution(mine, n_levels[k])
        u.append(table)
    labelled_per_rule = np.bincount(labelled_rule, minlength=n_rules)
    matches_per_rule = np.bincount(labelled_rule[is_match], minlength=n_rules)
    lam = np.where(labelled_per_rule >= minimum, (matches_per_rule + 0.5) / (labelled_per_rule + 1.0), np.nan)
    iterations, converged = 0, True
    if np.isnan(lam).any() or not all(fixed):  # EM for what the labels leave open
        patterns, pattern_rule, counts = pattern_counts(levels.astype(np.int8), rule) if len(levels) else \
            (np.zeros((0, len(names)), np.int8), np.zeros(0, np.int64), np.zeros(0, np.int64))
        known = pattern_counts(matches.astype(np.int8)) if len(matches) else None
        fit = fit_em(patterns, pattern_rule, counts, neutral, m0, u, np.where(np.isnan(lam), 0.1, lam),
                     options.max_iterations, 1e-6, known=(known[0], known[2]) if known is not None else None,
                     fixed_m=fixed)
        m, iterations, converged = fit.m, fit.iterations, fit.converged
        lam = np.where(np.isnan(lam), fit.match_rate, lam)
    else:
        m = m0
    comparisons = [ComparisonModel(name, "stitching", FEATURES[name], m[k], u[k], u_random[k], False)
                   for k, name in enumerate(names)]
    per_rule = np.bincount(rule, minlength=n_rules)
    training = {"candidate_pairs": int(len(levels)), "labelled_matches": int(is_match.sum()),
                "labelled_non_matches": int((~is_match).sum()), "random_pairs": int(len(random)),
                "m_from_labels": [n for n, f in zip(names, fixed) if f],
                "match_rate_from_labels": [r for r, n in zip(CANDIDATE_RULES, labelled_per_rule) if n >= minimum],
                "match_rate_from_labels_mask": [bool(n >= minimum) for n in labelled_per_rule],
                "labelled_by_rule": {r: {"matches": int(a), "non_matches": int(b - a)} for r, a, b in
                                     zip(CANDIDATE_RULES, matches_per_rule, labelled_per_rule)},
                "em_iterations": iterations, "converged": converged,
                "candidates_by_rule": dict(zip(CANDIDATE_RULES, map(int, per_rule)))}
    prior = float((lam * per_rule).sum() / max(per_rule.sum(), 1))
    return FSModel(list(CANDIDATE_RULES), comparisons, neutral, lam, prior, training)


def household_keys(golden_records: pd.DataFrame | None) -> pd.Series:
    """Per person id, its postal address in match form (street and postal code): persons with the
    same key live together. Persons without both are left out (no household is known)."""
    if golden_records is None or not {"street", "postal_code"} <= set(golden_records.columns):
        return pd.Series(dtype="str")
    street = normalize_text(golden_records["street"].astype("str").where(golden_records["street"].notna()))
    postal = normalize_text(golden_records["postal_code"].astype("str").where(golden_records["postal_code"].notna()))
    key = (street + "|" + postal).reset_index(drop=True)
    known = key.notna().to_numpy()
    ids = golden_records["person_id"].astype("str").reset_index(drop=True)[known]
    return pd.Series(key[known].to_numpy(), index=ids.to_numpy(), dtype="str")


def household_sizes(keys: pd.Series) -> pd.Series:
    """Per person id (of household_keys), how many persons share its address."""
    return keys.map(keys.value_counts()).astype("int64")


def _unrelated_ips(known: pd.DataFrame, households: pd.Series) -> set:
    """IPs on which persons of two or more households authenticated: a VPN exit, a café, an office
    below the NAT degree. A home IP carries one household (persons sharing an address count as
    one; a person without an address is a household of its own)."""
    on_ip = known[["ip", "person"]].dropna().drop_duplicates()
    person = on_ip["person"].astype("str")
    address = person.map(households)
    unit = np.where(address.isna().to_numpy(), ("person:" + person).to_numpy(object), address.to_numpy(object))
    units = on_ip.assign(unit=unit).drop_duplicates(["ip", "unit"]).groupby("ip").size()
    return set(units.index[units >= 2])


def stitch(sessions: pd.DataFrame, identifier_map: pd.DataFrame, persons: pd.DataFrame, options,
           backend: Backend = CPU, households: pd.Series | None = None) -> StitchResult:
    """Anonymous ids -> persons (deterministic, probabilistic, review, anonymous, shared). The
    joins are pandas; band keys, feature levels and scores run on the backend's array module.
    `households` (household_keys: person -> address) sends network-found stitches to a person who
    shares an address to review, and makes an IP that persons of two households used no key."""
    permutations = options.permutations
    xp = backend.xp
    window_ns = int(options.window_days * 24 * _NS_PER_HOUR)
    ids = identifier_map[identifier_map["id_type"].astype("str").isin(options.anonymous_types)]
    ids = ids[["hash", "id_type", "value", "person_id", "status"]].rename(columns={"hash": "anon_hash"})
    known_persons = set(persons.loc[~persons["is_anonymous"], "person_id"].astype("str"))
    per_anon = sessions.groupby("anon_hash").agg(sessions=("start", "size"), events=("events", "sum"),
                                                 first_seen=("start", "min"), last_seen=("end", "max")).reset_index()
    for column in ("first_seen", "last_seen"):
        per_anon[column] = per_anon[column].to_numpy(np.int64).view("datetime64[ns]")
    anon = ids.merge(per_anon, on="anon_hash", how="left")
    anon["person_id"] = anon["person_id"].astype("str")
    deterministic = anon["person_id"].isin(known_persons).to_numpy()
    shared = (anon["status"].astype("str") == "hub").to_numpy()
    eligible = ~deterministic & ~shared & anon["sessions"].notna().to_numpy()

    owner_of = pd.Series(np.where(deterministic, anon["person_id"], None), index=anon["anon_hash"].to_numpy())
    s = _prepare_sessions(sessions, sessions["anon_hash"].map(owner_of))
    known = s[s["person"].notna()]
    unknown = s[s["anon_hash"].isin(anon.loc[eligible, "anon_hash"])]
    ip_degree, subnet_degree = _degree(s, "ip"), _degree(s, "subnet")
    households = households if households is not None else pd.Series(dtype="str")
    several_households = _unrelated_ips(known, households)
    shared_ips = set(ip_degree.index[ip_degree > options.nat_degree]) | several_households
    shared_subnets = set(subnet_degree.index[subnet_degree > options.subnet_degree])

    def candidates_of(anonymous: pd.DataFrame) -> pd.DataFrame:
        return _candidates(anonymous, known, shared_ips, shared_subnets, window_ns, options, xp)

    def levels_of(pairs: pd.DataFrame, anonymous: pd.DataFrame):
        return _features(pairs, anonymous, known, shared_ips, shared_subnets, window_ns, permutations, xp)

    pairs = candidates_of(unknown)
    device_levels = levels_of(pairs, unknown)
    levels = to_host(device_levels)
    rule = pairs["rule"].to_numpy(np.int64)

    # Labels from the ids that did authenticate, compared as if they had not (the person's side
    # through its other ids only): the candidates the same rules find for them are matches when
    # they name the id's own person, non-matches otherwise (a housemate on the home IP, a
    # colleague on the office /24). They give m, u per rule and the match rate per rule.
    rng = np.random.default_rng(options.seed)
    authenticated = known[["anon_hash", "person"]].drop_duplicates()
    as_unknown = s[s["person"].notna()].drop(columns="person").assign(person=None)
    if authenticated["anon_hash"].nunique() > options.sample_pairs:
        # Labels need a sample, not every authenticated id: draw the ids before their candidates
        # (all of them would join every known session with every other on its network).
        ids = np.sort(authenticated["anon_hash"].unique())
        drawn = ids[np.sort(rng.choice(len(ids), options.sample_pairs, replace=False))]
        as_unknown = as_unknown[as_unknown["anon_hash"].isin(drawn)]
    labelled_pairs = candidates_of(as_unknown)
    if len(labelled_pairs) > options.sample_pairs:
        keep = np.sort(rng.choice(len(labelled_pairs), options.sample_pairs, replace=False))
        labelled_pairs = labelled_pairs.iloc[keep].reset_index(drop=True)
    own = authenticated.set_index("anon_hash")["person"]
    is_match = labelled_pairs["person"].to_numpy() == labelled_pairs["anon_hash"].map(own).to_numpy()
    labelled = to_host(levels_of(labelled_pairs, as_unknown))
    person_list = np.array(sorted(known_persons & set(known["person"].dropna())), dtype=object)
    anon_list = s["anon_hash"].drop_duplicates().to_numpy()
    if len(person_list) and len(anon_list):
        k = min(options.sample_pairs, len(anon_list) * len(person_list))
        random_pairs = pd.DataFrame({"anon_hash": anon_list[rng.integers(0, len(anon_list), k)],
                                     "person": person_list[rng.integers(0, len(person_list), k)]})
        random = to_host(levels_of(random_pairs, s))
    else:
        random = np.zeros((0, len(FEATURES)), np.int8)
    model = _model(levels, rule, labelled, labelled_pairs["rule"].to_numpy(np.int64), is_match, random, options)
    device_weight = match_weights(model, device_levels, xp.asarray(rule)) if len(levels) else xp.zeros(0)
    weight, probability = to_host(device_weight), to_host(probabilities(device_weight))

    # Decisions: each anonymous id's best candidate.
    scored = pairs.assign(probability=probability, match_weight=weight)
    order = np.lexsort((scored["person"].to_numpy().astype(str), -scored["probability"].to_numpy(),
                        scored["anon_hash"].to_numpy()))
    scored = scored.iloc[order]
    best_rows = ~scored["anon_hash"].duplicated()
    best = scored[best_rows.to_numpy()]
    best_levels = levels[order][best_rows.to_numpy()]
    auto, review = options.thresholds.auto_merge, options.thresholds.review
    # The runner-up: an id that two persons could both claim (a household's shared IP, a tablet)
    # is not stitched automatically; it goes to review, however high its best score.
    second = scored[(~best_rows).to_numpy()].drop_duplicates("anon_hash").set_index("anon_hash")["probability"]
    runner_up = best["anon_hash"].map(second).fillna(0.0).to_numpy()
    contested = runner_up >= review
    # Pages alone (no shared network) never stitch automatically: a catalogue's popular pages are
    # browsed by strangers alike. Nor does a rule whose match rate no labels support.
    network = best_levels[:, list(FEATURES).index("network")]
    labelled_rule = np.asarray(model.training["match_rate_from_labels_mask"], dtype=bool)[best["rule"].to_numpy(np.int64)]
    unsupported = (network < FEATURES["network"].index("same /24")) | ~labelled_rule
    # A household: the network ties the id to an address where several persons live.
    household = best["person"].astype("str").map(household_sizes(households)).fillna(1)
    household = household.to_numpy(np.int64)
    in_household = (household >= 2) & (best["rule"].to_numpy(np.int64) != CANDIDATE_RULES.index("similar pages"))
    decision = np.where((best["probability"] >= auto) & ~contested & ~unsupported & ~in_household, "probabilistic",
                        np.where(best["probability"] >= review, "review", "anonymous"))
    explained = best[["anon_hash"]].assign(candidate_person_id=best["person"].to_numpy(),
                                           probability=best["probability"].to_numpy(),
                                           match_weight=best["match_weight"].to_numpy(), runner_up_probability=runner_up,
                                           household_persons=household, decision=decision)
    tables = model.weight_table()
    best_rule = best["rule"].to_numpy(np.int64)
    explained["found_by"] = pd.Categorical.from_codes(best_rule, categories=list(CANDIDATE_RULES))
    for k, name in enumerate(FEATURES):
        explained[name] = pd.Categorical.from_codes(best_levels[:, k].astype(np.int64), categories=FEATURES[name])
        explained[f"{name}_weight"] = tables[k][best_rule, best_levels[:, k]]
    out = anon.merge(explained, on="anon_hash", how="left")
    method = np.where(deterministic, "deterministic", np.where(shared, "shared",
                      out["decision"].fillna("anonymous").to_numpy()))
    out["method"] = pd.Categorical(method, categories=["deterministic", "probabilistic", "review", "anonymous", "shared"])
    out["stitched_person_id"] = np.where(deterministic, out["person_id"],
                                         np.where(method == "probabilistic", out["candidate_person_id"], None))
    anonymous_map = out.rename(columns={"value": "anonymous_id", "person_id": "graph_person_id"})
    anonymous_map = anonymous_map.drop(columns=["anon_hash", "status", "decision"]).sort_values(
        ["id_type", "anonymous_id"], kind="stable").reset_index(drop=True)
    review_table = anonymous_map[anonymous_map["method"] == "review"].sort_values("probability", ascending=False,
                                                                                  kind="stable").reset_index(drop=True)
    counts = anonymous_map["method"].value_counts().to_dict()
    auto_p = anonymous_map.loc[anonymous_map["method"] == "probabilistic", "probability"]
    by_day = anonymous_map.loc[anonymous_map["method"] == "probabilistic", "first_seen"].dt.strftime("%Y-%m-%d")
    summary = {
        "anonymous_ids": len(anonymous_map),
        **{f"stitched_{k}" if k in ("deterministic", "probabilistic") else k: int(counts.get(k, 0))
           for k in ("deterministic", "probabilistic", "review", "anonymous", "shared")},
        "candidate_pairs": int(len(pairs)),
        "events_attributed": {m: int(anonymous_map.loc[anonymous_map["method"] == m, "events"].sum())
                              for m in ("deterministic", "probabilistic")},
        "estimated_false_positive_rate": float((1 - auto_p).mean()) if len(auto_p) else 0.0,
        "probabilistic_stitches_by_first_seen_day": by_day.value_counts().sort_index().to_dict(),
        "shared_ips_skipped": len(shared_ips),
        "ips_of_several_households": len(several_households),
        "household_to_review": int((in_household & (best["probability"] >= auto).to_numpy()).sum()),
        "model": model.training,
    }
    return StitchResult(anonymous_map, review_table, summary)
