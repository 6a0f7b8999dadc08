"""Comparison levels per candidate pair: each configured comparison turns a pair into one level.

Levels are small integers: 0 = null (either side missing: carries no weight), 1 = exact, then the
method's graded levels from strongest to weakest, and last "else". Everything a comparison needs
per record (exact-value codes, encoded strings, dates as day numbers, value frequencies for
term-frequency adjustment) is prepared once; pairs only index into it.
"""

from __future__ import annotations

import csv
import importlib.resources
import io
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import lru_cache
from types import ModuleType

import numba
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from resolver.compute.backend import module_of
from resolver.config import ComparisonConfig
from resolver.kernels import strings
from resolver.kernels.strings import Encoded, encode_for_comparison

NULL_LEVEL = 0
_SIMILARITY_LABEL = {"jaro_winkler": "jw", "levenshtein": "lev", "jaccard": "jaccard"}


@dataclass
class PreparedComparison:
    """One comparison, ready to compare any pair of records by position."""

    config: ComparisonConfig
    labels: list[str]  # per level; labels[0] == "null"
    valid: np.ndarray  # bool per record
    codes: np.ndarray  # int64 per record: exact-value code (-1 missing)
    values: pd.Series  # normalized text per record (for explanations)
    frequency: np.ndarray | None = None  # tf_adjust: share of records holding the record's value
    extra: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def n_levels(self) -> int:
        return len(self.labels)

    def for_explanations(self) -> PreparedComparison:
        """This comparison without the per-record arrays that comparing pairs needs: what
        explanations read (name, labels, values) stays."""
        return replace(self, valid=np.zeros(0, dtype=bool), codes=np.zeros(0, dtype=np.int64), frequency=None, extra={})

    def on(self, xp: ModuleType) -> PreparedComparison:
        """This comparison with its per-record arrays in `xp` (moved to the GPU once for CuPy);
        the text values stay on the host for explanations."""
        if xp is np:
            return self
        def move(value):
            if isinstance(value, Encoded):
                return Encoded(xp.asarray(value.offsets), xp.asarray(value.codes), xp.asarray(value.valid))
            return xp.asarray(value) if isinstance(value, np.ndarray) else value

        return replace(self, valid=xp.asarray(self.valid), codes=xp.asarray(self.codes),
                       frequency=None if self.frequency is None else xp.asarray(self.frequency),
                       extra={k: move(v) for k, v in self.extra.items()})


    def take(self, rows: np.ndarray) -> PreparedComparison:
        """What comparing and scoring pairs among just these records needs (renumbered from 0):
        not the text, which only explanations use."""
        def take(value):
            if isinstance(value, Encoded):
                return value.take(rows)
            return value[rows] if isinstance(value, np.ndarray) else value

        return replace(self, valid=self.valid[rows], codes=self.codes[rows], values=None,
                       frequency=None if self.frequency is None else self.frequency[rows],
                       extra={k: take(v) for k, v in self.extra.items()})


def level_labels(c: ComparisonConfig) -> list[str]:
    """The level names of a comparison, strongest first after "null"; "else" last."""
    if c.method == "exact":
        graded = []
    elif c.method in _SIMILARITY_LABEL:
        tag = _SIMILARITY_LABEL[c.method]
        graded = (["nickname"] if c.nicknames else []) + [f"{tag}>={t:g}" for t in c.thresholds]
    elif c.method == "date":
        graded = ["day/month swapped"] + [f"within {y:g} years" for y in c.years]
    elif c.method == "numeric":
        graded = [f"within {d:g}" for d in c.distances]
    elif c.method == "geo":
        return ["null"] + [f"within {d:g} km" for d in c.distances] + ["else"]
    elif c.method == "email":
        graded = ["same local part", "same domain"]
    elif c.method == "phone":
        graded = [f"same last {c.digits} digits"]
    else:  # pragma: no cover - the config validator lists the methods
        raise ValueError(c.method)
    return ["null", "exact", *graded, "else"]


# ---------------------------------------------------------------------------------------------
# Preparation (per record)
# ---------------------------------------------------------------------------------------------
def _codes(values: pd.Series) -> np.ndarray:
    return pd.factorize(values, sort=False)[0].astype(np.int64)


def _frequency(codes: np.ndarray) -> np.ndarray:
    """Share of the records with a value that hold this record's value (NaN when missing)."""
    valid = codes >= 0
    counts = np.bincount(codes[valid]) if valid.any() else np.zeros(0, np.int64)
    out = np.full(len(codes), np.nan)
    out[valid] = counts[codes[valid]] / max(int(valid.sum()), 1)
    return out


@lru_cache(maxsize=1)
def nickname_neighbours() -> dict[str, frozenset[str]]:
    """Given name -> the names the `nicknames` package lists as its nicknames, or lists it as a
    nickname of (a maintained, genealogy-based table; its pairs run both ways: robert - bill,
    bill - robert), lower case."""
    text = (importlib.resources.files("nicknames") / "names.csv").read_text(encoding="utf-8")
    neighbours: dict[str, set[str]] = {}
    for row in csv.DictReader(io.StringIO(text)):
        if row.get("relationship") != "has_nickname":
            continue
        a, b = row["name1"].strip().lower(), row["name2"].strip().lower()
        if a and b and a != b:
            neighbours.setdefault(a, set()).add(b)
            neighbours.setdefault(b, set()).add(a)
    return {name: frozenset(names) for name, names in neighbours.items()}


def _nickname_pairs(neighbours: dict[str, frozenset[str]]):
    """Every two names that may be one person's given name: a name and a nickname listed for it,
    or two short forms of one longer name (bob and rob, of robert). Two names that are both
    nicknames of a shorter one are not (william and robert, though both go by bill)."""
    for name, others in neighbours.items():
        for other in others:
            yield name, other
        shorter = [o for o in others if len(o) < len(name)]
        for a in shorter:
            for b in shorter:
                if a != b:
                    yield a, b


@lru_cache(maxsize=1)
def nickname_index() -> tuple[dict[str, int], np.ndarray]:
    """(name -> a number, the sorted keys a * N + b of every two names _nickname_pairs relates):
    whether two names are nicknames of each other is one binary search on the keys, on any array
    module."""
    neighbours = nickname_neighbours()
    number = {name: i for i, name in enumerate(sorted(neighbours))}
    n = len(number)
    keys = {number[a] * n + number[b] for a, b in _nickname_pairs(neighbours)}
    return number, np.array(sorted(keys), dtype=np.int64)


def _nickname_ids(values: pd.Series) -> np.ndarray:
    """Per record, the number of its first word in the nickname table (-1 = not a known name)."""
    number, _ = nickname_index()
    codes, uniques = pd.factorize(values)
    table = np.full(len(uniques) + 1, -1, dtype=np.int32)
    for i, value in enumerate(uniques.tolist()):  # Python strings at once: iterating the array is slow
        table[i] = number.get(str(value).split(" ")[0], -1)
    return table[np.where(codes >= 0, codes, len(uniques))]


def _days(values: pd.Series) -> np.ndarray:
    """ISO dates -> days since 1970 (int64; min int where missing)."""
    parsed = pd.to_datetime(values, format="%Y-%m-%d", errors="coerce")
    ints = parsed.to_numpy("datetime64[D]").astype(np.int64)
    return ints


def prepare(c: ComparisonConfig, attributes: dict[str, pd.Series]) -> PreparedComparison:
    values = attributes[c.columns[0]].reset_index(drop=True)
    if c.method == "geo":
        lat = attributes[c.columns[0]].to_numpy(np.float64, na_value=np.nan)
        lon = attributes[c.columns[1]].to_numpy(np.float64, na_value=np.nan)
        valid = ~(np.isnan(lat) | np.isnan(lon))
        text = pd.Series([f"{a:.5f},{b:.5f}" for a, b in zip(lat, lon)]).where(valid)
        return PreparedComparison(c, level_labels(c), valid, _codes(text), text, extra={"lat": lat, "lon": lon})
    if c.method == "numeric":
        numbers = values.to_numpy(np.float64, na_value=np.nan)
        valid = ~np.isnan(numbers)
        prepared = PreparedComparison(c, level_labels(c), valid, _codes(values), values, extra={"number": numbers})
    else:
        values = values.astype("str")
        prepared = PreparedComparison(c, level_labels(c), values.notna().to_numpy().copy(), _codes(values), values)
    if c.method in _SIMILARITY_LABEL:
        prepared.extra["encoded"] = encode_for_comparison(values)
        if c.nicknames:
            prepared.extra["nicknames"] = _nickname_ids(values)
    elif c.method == "date":
        days, swap_codes = _date_parts(values)
        prepared.valid &= days != np.iinfo(np.int64).min
        prepared.extra.update(days=days, swap_codes=swap_codes)
    elif c.method == "email":
        prepared.extra.update(local=_codes(email_local(values)), domain=_codes(email_domain(values)))
    elif c.method == "phone":
        digits = digits_only(values)
        prepared.extra["suffix"] = _codes(digits.str.slice(-c.digits).where(digits.str.len() >= c.digits))
    if c.tf_adjust:
        prepared.frequency = _frequency(prepared.codes)
    return prepared


def _at_split(values: pd.Series) -> pa.ListArray | None:
    """Each value split at its first '@' by Arrow (a fifth of the time of the regexes below), or
    None where the split could differ from them: values not held by Arrow, or holding a line
    break (the regexes' '.' and '$' stop at one)."""
    dtype = values.dtype
    if not (isinstance(dtype, pd.StringDtype) and dtype.storage == "pyarrow"):
        return None
    arr = pa.array(values.array)
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if pc.any(pc.match_substring(arr, "\n")).as_py():
        return None
    return pc.split_pattern(arr, "@", max_splits=1)


def email_local(values: pd.Series) -> pd.Series:
    """The part before the '@' (the whole value without one)."""
    split = _at_split(values)
    if split is None:  # regexes, not pandas' split: they keep the string dtype when all are missing
        return values.str.replace(r"@.*$", "", regex=True)
    return pd.Series(pc.list_element(split, 0), index=values.index, dtype=values.dtype)


def email_domain(values: pd.Series) -> pd.Series:
    """The part after the first '@' (missing without one)."""
    split = _at_split(values)
    if split is None:
        return values.str.replace(r"^[^@]*@", "", regex=True).where(values.str.contains("@", regex=False).fillna(False))
    second = pc.if_else(pc.equal(pc.list_value_length(split), 2), pc.add(split.offsets[:-1], 1), None)
    return pd.Series(pc.take(split.values, second), index=values.index, dtype=values.dtype)


def digits_only(values: pd.Series) -> pd.Series:
    """Each value without its non-digits. Normalized phones are '+' and digits: removing the '+'
    (a plain substring) and checking that digits are left is far cheaper than the regex."""
    dtype = values.dtype
    if isinstance(dtype, pd.StringDtype) and dtype.storage == "pyarrow":
        arr = pa.array(values.array)
        plain = pc.replace_substring(arr, "+", "")
        if pc.all(pc.ascii_is_decimal(plain)).as_py():
            return pd.Series(plain, index=values.index, dtype=dtype)
    return values.str.replace(r"\D", "", regex=True)


def _date_parts(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Per record, days since 1970 (_days) and the code of the day/month-swapped form (_pair_codes),
    worked out once per distinct date (tens of thousands among a million records): the same
    numbers as over every record, since `values` and their distinct values number codes alike."""
    codes, uniques = pd.factorize(values, sort=False)
    distinct = pd.Series(uniques, dtype=values.dtype)
    swapped = distinct.str.slice(0, 5) + distinct.str.slice(8, 10) + "-" + distinct.str.slice(5, 7)
    days = np.append(_days(distinct), np.iinfo(np.int64).min)  # the last: missing
    swap = np.append(_pair_codes(distinct, swapped), -1)
    at = np.where(codes >= 0, codes, len(uniques))
    return days[at], swap[at]


def _pair_codes(values: pd.Series, swapped: pd.Series) -> np.ndarray:
    """Codes of the swapped form in the code space of `_codes(values)` (factorize numbers values by
    first appearance, and they come first), so that swap(a) == b compares codes."""
    both = pd.concat([values, swapped], ignore_index=True)
    codes = _codes(both)
    return codes[len(values):]


PARALLEL_ROWS = 50_000  # below this, threads cost more than they save


def prepare_all(comparisons: list[ComparisonConfig], attributes: dict[str, pd.Series],
                workers: int = 2) -> list[PreparedComparison]:
    """Every comparison prepared, side by side in `workers` threads (Arrow's string kernels and
    numpy release the GIL), in comparison order."""
    rows = max((len(v) for v in attributes.values()), default=0)
    if workers <= 1 or rows < PARALLEL_ROWS:
        return [prepare(c, attributes) for c in comparisons]
    with ThreadPoolExecutor(max_workers=min(workers, len(comparisons))) as pool:
        return list(pool.map(lambda c: prepare(c, attributes), comparisons))


# ---------------------------------------------------------------------------------------------
# Levels (per pair)
# ---------------------------------------------------------------------------------------------
def _kernel_of(p: PreparedComparison) -> tuple[str, float]:
    """The string kernel of a similarity comparison and its parameter."""
    method = p.config.method
    if method == "jaro_winkler":
        return "jaro_winkler", 0.1
    if method == "levenshtein":
        return "levenshtein", 0.0
    if p.config.ngram:
        return "jaccard_ngrams", float(p.config.ngram)
    return "jaccard_tokens", 0.0


def _similarity(p: PreparedComparison, left: np.ndarray, right: np.ndarray, target: str) -> np.ndarray:
    name, param = _kernel_of(p)
    return strings.similarity(name, p.extra["encoded"], left, right, param, target=target)


def _haversine_km(lat1, lon1, lat2, lon2):
    xp = module_of(lat1)
    lat1, lon1, lat2, lon2 = map(xp.radians, (lat1, lon1, lat2, lon2))
    h = xp.sin((lat2 - lat1) / 2) ** 2 + xp.cos(lat1) * xp.cos(lat2) * xp.sin((lon2 - lon1) / 2) ** 2
    return 2 * 6371.0088 * xp.arcsin(xp.sqrt(xp.clip(h, 0, 1)))


def are_nicknames(ids_a, ids_b):
    """Per pair of names (nickname_index numbers, -1 = unknown): whether one is a nickname of the
    other (nickname_index; equal names do not count: that is the exact level's)."""
    xp = module_of(ids_a)
    number, keys = nickname_index()
    known = (ids_a >= 0) & (ids_b >= 0)
    key = ids_a.astype(xp.int64) * len(number) + ids_b.astype(xp.int64)
    keys = xp.asarray(keys)
    at = xp.minimum(xp.searchsorted(keys, key), len(keys) - 1)
    return known & (keys[at] == key) if len(keys) else xp.zeros(len(key), dtype=bool)


def _nickname_match(ids, left, right):
    """Whether the two records' first names may be one given name (a nickname of the other)."""
    return are_nicknames(ids[left], ids[right])


def _assign(level: np.ndarray, todo: np.ndarray, hit: np.ndarray, value: int) -> None:
    """Give `value` to the pairs still undecided (todo) where hit holds; they are then decided."""
    take = todo & hit
    level[take] = value
    todo &= ~hit


@numba.njit(parallel=True, cache=True)
def _code_levels(left, right, valid, codes, first, second, tests, nonnegative, last, out):
    """Levels from codes alone, in one pass: 0 (a side missing), 1 (same code), 2 where `first`
    agrees, 3 where `second` does (the first `tests` of the two; with `nonnegative`, agreeing
    needs a code >= 0), else `last`."""
    for k in numba.prange(len(left)):
        a, b = left[k], right[k]
        if not (valid[a] and valid[b]):
            out[k] = 0
        elif codes[a] == codes[b]:
            out[k] = 1
        elif tests >= 1 and first[a] == first[b] and (not nonnegative or first[a] >= 0):
            out[k] = 2
        elif tests >= 2 and second[a] == second[b] and (not nonnegative or second[a] >= 0):
            out[k] = 3
        else:
            out[k] = last


@numba.njit(parallel=True, cache=True)
def _date_levels(left, right, valid, codes, swap, days, limits, out):
    """A date comparison's levels in one pass: 0, 1 (same date), 2 (day and month swapped), then
    3 + k for the first k with the dates at most limits[k] days apart, else 3 + len(limits)."""
    for k in numba.prange(len(left)):
        a, b = left[k], right[k]
        if not (valid[a] and valid[b]):
            out[k] = 0
        elif codes[a] == codes[b]:
            out[k] = 1
        elif swap[a] == codes[b]:
            out[k] = 2
        else:
            apart = abs(days[a] - days[b])
            level = 3 + len(limits)
            for y in range(len(limits)):
                if apart <= limits[y]:
                    level = 3 + y
                    break
            out[k] = level


_CODE_TESTS = {"exact": (), "email": ("local", "domain"), "phone": ("suffix",)}


def _compiled_levels(p: PreparedComparison, left: np.ndarray, right: np.ndarray) -> np.ndarray | None:
    """compare_levels of a method decided by codes and numbers alone (exact, email, phone, date),
    on the host: one compiled parallel pass instead of a pass over every pair per level. None for
    the other methods. The array path below stays the definition (and the GPU's)."""
    method = p.config.method
    if method not in _CODE_TESTS and method != "date":
        return None
    left = np.ascontiguousarray(left, dtype=np.int64)
    right = np.ascontiguousarray(right, dtype=np.int64)
    out = np.empty(len(left), dtype=np.int8)
    if method == "date":
        limits = np.array([y * 365.25 for y in p.config.years], dtype=np.float64)
        _date_levels(left, right, p.valid, p.codes, p.extra["swap_codes"], p.extra["days"], limits, out)
        return out
    tests = [p.extra[name] for name in _CODE_TESTS[method]]
    first, second = (tests + [p.codes, p.codes])[:2]
    _code_levels(left, right, p.valid, p.codes, first, second, len(tests), method == "phone", p.n_levels - 1, out)
    return out


def _similarity_levels(p: PreparedComparison, left, right, target: str):
    """compare_levels of a string similarity: null and exact first (on the host in one compiled
    pass), then nicknames and the similarity on the pairs still undecided only."""
    c = p.config
    xp = module_of(left)
    labels = p.labels
    if target == "cpu" and xp is np:
        left = np.ascontiguousarray(left, dtype=np.int64)
        right = np.ascontiguousarray(right, dtype=np.int64)
        level = np.empty(len(left), dtype=np.int8)
        _code_levels(left, right, p.valid, p.codes, p.codes, p.codes, 0, False, -1, level)  # -1: undecided
        rows = np.flatnonzero(level < 0)
    else:
        level = xp.zeros(len(left), dtype=xp.int8)
        todo = p.valid[left] & p.valid[right]
        _assign(level, todo, p.codes[left] == p.codes[right], labels.index("exact"))
        rows = xp.flatnonzero(todo)
    if c.nicknames:
        nickname = _nickname_match(p.extra["nicknames"], left[rows], right[rows])
        level[rows[nickname]] = labels.index("nickname")
        rows = rows[~nickname]
    first = labels.index("nickname") + 1 if c.nicknames else 2
    if target == "cuda":  # the kernel writes the levels: one byte a pair back, not a float
        name, param = _kernel_of(p)
        level[rows] = strings.similarity_levels(name, p.extra["encoded"], left[rows], right[rows], c.thresholds,
                                                first, len(labels) - 1, param, null=len(labels) - 1, target=target)
        return level
    sim = _similarity(p, left[rows], right[rows], target)
    undecided = xp.ones(len(rows), dtype=bool)
    for k, t in enumerate(c.thresholds):
        hit = undecided & (sim >= t)
        level[rows[hit]] = first + k
        undecided &= ~hit
    level[rows[undecided]] = len(labels) - 1
    return level


def compare_levels(p: PreparedComparison, left, right, target: str = "cpu"):
    """The level of each pair (int8), 0 where either side is missing. Array-module generic: with
    CuPy row indices (and `p` moved there with .on(cupy)) everything runs on the GPU."""
    c = p.config
    n = len(left)
    xp = module_of(left)
    if target == "cpu" and xp is np:
        compiled = _compiled_levels(p, left, right)
        if compiled is not None:
            return compiled
    labels = p.labels
    if c.method in _SIMILARITY_LABEL:
        return _similarity_levels(p, left, right, target)
    level = xp.zeros(n, dtype=xp.int8)
    todo = p.valid[left] & p.valid[right]
    if c.method == "geo":
        km = _haversine_km(p.extra["lat"][left], p.extra["lon"][left], p.extra["lat"][right], p.extra["lon"][right])
        for k, d in enumerate(c.distances):
            _assign(level, todo, km <= d, 1 + k)
        level[todo] = len(labels) - 1
        return level
    _assign(level, todo, p.codes[left] == p.codes[right], labels.index("exact"))
    if c.method == "date":
        swap = p.extra["swap_codes"]
        _assign(level, todo, swap[left] == p.codes[right], labels.index("day/month swapped"))
        apart = xp.abs(p.extra["days"][left] - p.extra["days"][right])
        for k, y in enumerate(c.years):
            _assign(level, todo, apart <= y * 365.25, 3 + k)
    elif c.method == "numeric":
        diff = xp.abs(p.extra["number"][left] - p.extra["number"][right])
        for k, d in enumerate(c.distances):
            _assign(level, todo, diff <= d, 2 + k)
    elif c.method == "email":
        _assign(level, todo, p.extra["local"][left] == p.extra["local"][right], 2)
        _assign(level, todo, p.extra["domain"][left] == p.extra["domain"][right], 3)
    elif c.method == "phone":
        suffix = p.extra["suffix"]
        _assign(level, todo, (suffix[left] >= 0) & (suffix[left] == suffix[right]), 2)
    level[todo] = len(labels) - 1
    return level


def comparison_matrix(prepared: list[PreparedComparison], left, right, target: str = "cpu",
                      chunk: int = 2_000_000):
    """Levels of every comparison for every pair: (n_pairs, n_comparisons) int8, in chunks, in the
    array module of the row indices (prepared comparisons must live there too: .on(xp))."""
    xp = module_of(left)
    out = xp.zeros((len(left), len(prepared)), dtype=xp.int8)
    for start in range(0, len(left), chunk):
        lo, hi = left[start:start + chunk].astype(xp.int64), right[start:start + chunk].astype(xp.int64)
        for k, p in enumerate(prepared):
            out[start:start + chunk, k] = compare_levels(p, lo, hi, target)
    return out
