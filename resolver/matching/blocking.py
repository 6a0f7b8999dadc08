"""Candidate pairs from blocking rules, and their counts before any pair is made.

A rule is a list of derived keys (surname prefix, birth year, phonetic code, last phone digits...).
Records whose keys all agree fall in one block; every pair inside a block is a candidate.

- Each rule's key is a 64-bit hash per record (0 = some part missing: no block).
- Blocks larger than `max_block_size` are skipped for that rule, with a warning naming the key:
  a rule's pairs are bounded by n * cap / 2, never by how common a value is.
- The union of the rules compares each pair once: rule k drops a pair when an earlier rule
  already produced it (the pair agrees on that rule's key), so no global de-duplication is needed.
- Pairs already in one deterministic person are not candidates.

Pair counts per rule come from block sizes alone (O(records)): `plan_blocking`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import ModuleType

import numba
import numpy as np
import pandas as pd
import pyarrow as pa

from resolver.compute.backend import CPU, Backend, module_of, to_host
from resolver.compute.dispatch import choose
from resolver.matching.compare import digits_only, email_domain, email_local
from resolver.config import LINK_TYPES, BlockingConfig, BlockingRule, ConfigError
from resolver.kernels.hashing import hash_strings, mix64
from resolver.keys import KEY_FUNCTIONS, KeyExpr, parse_key  # noqa: F401 - their home was here

# ---------------------------------------------------------------------------------------------
# Which pairs may be candidates: matching.link_type
# ---------------------------------------------------------------------------------------------
# LINK_TYPES (resolver.config): link_and_dedupe, link_only, dedupe_only (Splink's names)
LINK_AND_DEDUPE, LINK_ONLY, DEDUPE_ONLY = range(3)


@dataclass(frozen=True)
class PairScope:
    """Which pairs of records a link type allows: link_only, pairs of records in different groups
    (sources) only; dedupe_only, pairs within one group only (link_and_dedupe needs no scope).
    `groups`: each record's group code (host or device array)."""

    link_type: str
    groups: np.ndarray

    @property
    def code(self) -> int:
        return LINK_TYPES.index(self.link_type)

    def take(self, rows) -> "PairScope":
        return PairScope(self.link_type, self.groups[rows])

    def on(self, xp: ModuleType) -> "PairScope":
        return PairScope(self.link_type, xp.asarray(self.groups))

    def allows(self, a, b):
        """Per pair (arrays of record positions), whether the link type allows it."""
        same = self.groups[a] == self.groups[b]
        return ~same if self.code == LINK_ONLY else same


def pair_scope(link_type: str, sources: pd.Series) -> PairScope | None:
    """The scope of `link_type` over records whose sources are `sources` (None: every pair)."""
    if link_type == "link_and_dedupe":
        return None
    codes = pd.factorize(sources)[0]
    return PairScope(link_type, np.ascontiguousarray(codes, dtype=np.int64))


def _scope_arrays(scope: PairScope | None) -> tuple[int, np.ndarray]:
    """The link type code and the groups as the pair kernels take them."""
    if scope is None or scope.code == LINK_AND_DEDUPE:
        return LINK_AND_DEDUPE, np.zeros(0, dtype=np.int64)
    return scope.code, np.ascontiguousarray(to_host(scope.groups), dtype=np.int64)


# ---------------------------------------------------------------------------------------------
# Key values
# ---------------------------------------------------------------------------------------------
def _per_distinct(values: pd.Series, fn) -> pd.Series:
    """Apply a Python function to each distinct non-missing value (names repeat a lot)."""
    codes, uniques = pd.factorize(values)
    mapped = np.array([fn(u) for u in uniques], dtype=object)
    out = pd.Series(np.where(codes >= 0, mapped[np.maximum(codes, 0)] if len(mapped) else None, None), dtype="str")
    return out.where(out != "")


def key_values(expr: KeyExpr, attributes: dict[str, pd.Series]) -> pd.Series:
    """The key part as text per record (NA = missing: the record joins no block of this rule)."""
    values = [attributes[c] for c in expr.columns]
    first = values[0].astype("str")
    f = expr.function
    if f is None:
        return first
    if f == "prefix":
        return first.str.slice(0, expr.args[0])
    if f == "initials":
        return _per_distinct(first, lambda v: "".join(w[0] for w in v.split()))
    if f == "last_digits":
        digits = digits_only(first)
        n = expr.args[0]
        return digits.str.slice(-n).where(digits.str.len() >= n)
    if f == "year":
        return first.str.slice(0, 4).where(first.str.match(r"^\d{4}"))
    if f in ("metaphone", "soundex"):
        import jellyfish

        encode = jellyfish.metaphone if f == "metaphone" else jellyfish.soundex
        return _per_distinct(first, lambda v: " ".join(encode(w) for w in v.split()))
    if f == "email_local":
        return email_local(first)
    if f == "email_domain":
        return email_domain(first)
    if f == "unordered":
        second = values[1].astype("str")
        low = first.where(first <= second, second)
        high = second.where(first <= second, first)
        return (low + "|" + high).where(first.notna() & second.notna())
    raise AssertionError(f)


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
# The top bit of a key marks a refined block (an over-cap block re-blocked by finer keys): its
# pairs agree on the refine keys by construction, so they are candidates but not a fair sample for
# training (agreement_masks leaves them out of their rule's session).
REFINED = np.uint64(1 << 63)


@numba.njit(parallel=True, cache=True)
def _mix_part(combined: np.ndarray, missing: np.ndarray, hashed: np.ndarray) -> None:
    """rule_keys' step for one key part on the host, in place and in one pass:
    combined = mix64(combined * _GOLDEN + hashed), missing |= hashed == 0."""
    for i in numba.prange(len(combined)):
        h = combined[i] * _GOLDEN + hashed[i]
        h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        combined[i] = h ^ (h >> np.uint64(31))
        missing[i] |= hashed[i] == 0


def rule_keys(keys: list[str], attributes: dict[str, pd.Series], n: int, backend: Backend = CPU):
    """64-bit block key per record (0 = a part is missing) and the text of each part; the key
    parts are hashed by the backend's kernel target and the key lives in its array module."""
    xp = backend.xp
    combined = xp.zeros(n, dtype=xp.uint64)
    missing = xp.zeros(n, dtype=bool)
    parts = []
    with np.errstate(over="ignore"):
        for position, key in enumerate(keys):
            text = key_values(parse_key(key), attributes).reset_index(drop=True)
            parts.append(text)
            hashed = hash_strings(pa.array(text.array, type=pa.large_string()), prefix=f"{position}:".encode(),
                                  target=backend.kernels, xp=xp)
            if xp is np:
                _mix_part(combined, missing, hashed)
            else:
                missing |= hashed == 0
                combined = mix64(combined * _GOLDEN + hashed)
    combined[missing] = 0
    combined &= ~REFINED  # the top bit is kept for refined keys (see REFINED)
    combined[(combined == 0) & ~missing] = 1
    return combined, parts


# ---------------------------------------------------------------------------------------------
# Plan: counts from block sizes
# ---------------------------------------------------------------------------------------------
@dataclass
class RulePlan:
    name: str
    keyed_records: int
    blocks: int
    pairs: int  # pairs inside blocks within the cap, refined sub-blocks included (before cross-rule de-duplication)
    capped_blocks: int  # blocks (or refined sub-blocks) still over the cap: skipped for this rule
    capped_records: int
    capped_pairs: int  # pairs the cap avoided
    largest: list[tuple[str, int]] = field(default_factory=list)  # (key text, records)
    refined_blocks: int = 0  # blocks over the cap that were re-blocked with the rule's refine keys
    refined_pairs: int = 0  # pairs their sub-blocks within the cap make (counted in `pairs`)
    refine_missing: int = 0  # records of those blocks that lack a refine key part (they leave the block)
    skipped: list[tuple[str, int]] = field(default_factory=list)  # the largest skipped (sub-)blocks


@dataclass
class BlockingKeys:
    """Per rule: each record's effective key (0 = no block, or its block was over the cap; a refined
    key where an over-cap block was re-blocked)."""

    rules: list[str]
    keys: np.ndarray  # (n_rules, n_records) uint64
    plans: list[RulePlan]
    raw_keys: np.ndarray | None = None  # before deleted records and over-cap blocks lose theirs
    # Per rule, _blocks of its keys where blocking sorted them already (None where over-cap blocks
    # changed them): candidate_pairs takes them instead of sorting again, then drops them (memory)
    blocks: list | None = None

    def warnings(self, cap: int) -> list[str]:
        out = []
        for plan in self.plans:
            for text, size in plan.skipped:
                out.append(f"blocking rule {plan.name!r}: block {text!r} has {size:,} records (cap {cap:,}); "
                           "its pairs are skipped for this rule")
        return out


def _key_text(keys: list[str], attributes: dict[str, pd.Series], row: int) -> str:
    """The text of one record's key (for naming the largest blocks)."""
    used = {c for k in keys for c in parse_key(k).columns}
    one = {name: attributes[name].iloc[[row]].reset_index(drop=True) for name in used}
    return " | ".join(str(key_values(parse_key(k), one).iloc[0]) for k in keys)


def _rule_keys_reusing(keys: list[str], attributes: dict[str, pd.Series], n: int, backend: Backend,
                       known: np.ndarray | None, known_keys: np.ndarray | None):
    """rule_keys, computing only the records whose keys are not known (`known` mask)."""
    if known is None:
        return rule_keys(keys, attributes, n, backend)[0]
    todo = np.flatnonzero(~known)
    out = np.asarray(known_keys, dtype=np.uint64).copy()
    if len(todo):
        subset = {name: values.iloc[todo].reset_index(drop=True) for name, values in attributes.items()}
        out[todo] = to_host(rule_keys(keys, subset, len(todo), backend)[0])
    return backend.xp.asarray(out)


@numba.njit(cache=True)
def _sort_ties(order: np.ndarray, sorted_keys: np.ndarray) -> None:
    """Put the positions of each run of equal keys in ascending order, in place."""
    n = len(order)
    start = 0
    while start < n:
        end = start + 1
        while end < n and sorted_keys[end] == sorted_keys[start]:
            end += 1
        if end - start > 32:  # a big block: numba's sort (positions are distinct)
            order[start:end] = np.sort(order[start:end])
        else:  # the usual small block: insertion sort
            for i in range(start + 1, end):
                value = order[i]
                j = i - 1
                while j >= start and order[j] > value:
                    order[j + 1] = order[j]
                    j -= 1
                order[j + 1] = value
        start = end


def _stable_argsort(xp: ModuleType, keys):
    """argsort(keys, kind="stable"). On the host, numpy's unstable argsort (vectorized) and then
    the ties put back in position order: twice as fast as its stable sort of 64-bit keys."""
    if xp is not np:
        return xp.argsort(keys, kind="stable")
    order = np.argsort(keys)
    _sort_ties(order, keys[order])
    return order


def _blocks(xp: ModuleType, keys):
    """Keyed records grouped by key (stable: position order inside a block): the records in block
    order, each block's start in that order, and its size. Blocks come in ascending key order."""
    keyed = xp.flatnonzero(keys != 0)
    order = _stable_argsort(xp, keys[keyed])
    members = keyed[order]
    sorted_keys = keys[members]
    boundary = xp.ones(len(members), dtype=bool)
    boundary[1:] = sorted_keys[1:] != sorted_keys[:-1]
    starts = xp.flatnonzero(boundary)
    sizes = xp.diff(xp.concatenate([starts, xp.asarray([len(members)], dtype=starts.dtype)]))
    return members, starts, sizes.astype(xp.int64)


def _largest(xp: ModuleType, sizes, top: int):
    """argsort(-sizes, kind="stable")[:top]: the `top` largest blocks, the first block first among
    equals, sorting only the blocks at least as large as the top-th (not all of them)."""
    if top <= 0 or not len(sizes):
        return xp.zeros(0, dtype=xp.int64)
    if top < len(sizes):
        threshold = xp.partition(sizes, len(sizes) - top)[len(sizes) - top]
        candidates = xp.flatnonzero(sizes >= threshold)
    else:
        candidates = xp.arange(len(sizes))
    return candidates[xp.argsort(-sizes[candidates], kind="stable")[:top]]


def _block_of(xp: ModuleType, sizes):
    """Each member's block (members in block order), from the block sizes (CuPy's repeat takes no
    array of counts: a search over the block starts instead)."""
    starts = xp.cumsum(sizes) - sizes
    return xp.searchsorted(starts, xp.arange(int(sizes.sum()), dtype=xp.int64), side="right") - 1


def _block_pairs(xp: ModuleType, members, sizes, groups=None, link_type: int = LINK_AND_DEDUPE):
    """Pairs each block makes (members in block order, `sizes` per block): all of them, or with
    groups those the link type allows (link_only: n^2 - sum of n_g^2, halved; dedupe_only: the
    pairs inside each group)."""
    total = sizes * (sizes - 1) // 2
    if groups is None or link_type == LINK_AND_DEDUPE or not len(sizes):
        return total
    g = groups[members].astype(xp.int64)
    block = _block_of(xp, sizes)
    width = int(g.max()) + 1
    combos, counts = xp.unique(block * width + g, return_counts=True)
    counts = counts.astype(xp.int64)
    same = xp.bincount(combos // width, weights=(counts * (counts - 1) // 2).astype(xp.float64),
                       minlength=len(sizes)).astype(xp.int64)
    return total - same if link_type == LINK_ONLY else same


def _refine(xp: ModuleType, keys, pending, rule: BlockingRule, attributes: dict[str, pd.Series], cap: int,
            backend: Backend, groups, link_type: int, top: int) -> dict:
    """Re-block the records of over-cap blocks (`pending`, in `keys`, which is changed in place):
    each refine key in turn is mixed into their key (a record lacking it leaves the block); the
    sub-blocks within the cap keep their refined keys, those still over it go on to the next key.
    What is over the cap after the last key is skipped (key 0). Returns the plan's numbers."""
    out = {"refined_pairs": 0, "refine_missing": 0, "capped_blocks": 0, "capped_records": 0, "capped_pairs": 0,
           "skipped": []}
    used: list[str] = []
    for depth, key in enumerate(rule.refine_keys):
        if not len(pending):
            break
        used.append(key)
        rows = to_host(pending)
        subset = {c: attributes[c].iloc[rows].reset_index(drop=True) for c in parse_key(key).columns}
        text = key_values(parse_key(key), subset).reset_index(drop=True)
        part = hash_strings(pa.array(text.array, type=pa.large_string()), prefix=f"refine{depth}:".encode(),
                            target=backend.kernels, xp=xp)
        lacking = part == 0
        out["refine_missing"] += int(lacking.sum())
        keys[pending[lacking]] = 0
        pending, part = pending[~lacking], part[~lacking]
        with np.errstate(over="ignore"):
            refined = mix64(keys[pending] * _GOLDEN + part)
        keys[pending] = refined | REFINED
        order, starts, sizes = _blocks(xp, keys[pending])
        over = sizes > cap
        pairs = _block_pairs(xp, pending[order], sizes, groups, link_type)
        out["refined_pairs"] += int(pairs[~over].sum())
        pending = pending[order[over[_block_of(xp, sizes)]]]
    if len(pending):  # still over the cap: skipped for this rule, with a warning naming the key
        order, starts, sizes = _blocks(xp, keys[pending])
        members = pending[order]
        pairs = _block_pairs(xp, members, sizes, groups, link_type)
        out.update(capped_blocks=int(len(sizes)), capped_records=int(sizes.sum()), capped_pairs=int(pairs.sum()))
        biggest = to_host(_largest(xp, sizes, top))
        first = to_host(members[starts[xp.asarray(biggest, dtype=xp.int64)]])
        out["skipped"] = [(_key_text(rule.keys + used, attributes, int(m)), int(z))
                          for m, z in zip(first, to_host(sizes[xp.asarray(biggest, dtype=xp.int64)]))]
        keys[pending] = 0
    return out


MAX_MATCHED_RECORDS = 2**31 - 1  # pairs hold record positions as int32 (half the memory of int64)


def check_positions_fit(n_records: int) -> None:
    """Pairs name records by int32 positions: more records in one matching run would wrap them
    silently, so they are refused with a clear error instead."""
    if n_records > MAX_MATCHED_RECORDS:
        raise ConfigError(f"{n_records:,} records to match in one run: pairs hold record positions as int32, "
                         f"so at most {MAX_MATCHED_RECORDS:,} can be matched together; split the sources")


def build_blocking_keys(config: BlockingConfig, attributes: dict[str, pd.Series], active: np.ndarray,
                        top: int = 5, backend: Backend = CPU, known: np.ndarray | None = None,
                        known_keys: np.ndarray | None = None, scope: PairScope | None = None) -> BlockingKeys:
    """Each rule's keys for the active records, with the plan (pair counts, largest blocks).
    The keys are returned on the host; the backend computes them. With `known` (a mask of records)
    and `known_keys` (n_rules, n), those records' keys are taken as given (an incremental run).
    A block over the cap is re-blocked with the rule's refine keys (`_refine`); with a `scope`,
    pairs are counted as its link type allows."""
    xp = backend.xp
    n = len(active)
    check_positions_fit(n)
    inactive = xp.asarray(~np.asarray(active, dtype=bool))
    all_keys = np.zeros((len(config.rules), n), dtype=np.uint64)
    raw_keys = np.zeros((len(config.rules), n), dtype=np.uint64)
    plans = []
    cap = config.max_block_size
    link_type, host_groups = _scope_arrays(scope)
    groups = xp.asarray(host_groups) if link_type != LINK_AND_DEDUPE else None
    sorted_blocks = []
    for r, rule in enumerate(config.rules):
        keys = _rule_keys_reusing(rule.keys, attributes, n, backend, known,
                                  None if known_keys is None else known_keys[r])
        raw_keys[r] = to_host(keys)
        keys[inactive] = 0
        members, starts, sizes = _blocks(xp, keys)
        over = sizes > cap
        pairs = _block_pairs(xp, members, sizes, groups, link_type)
        biggest = to_host(_largest(xp, sizes, top))
        first_member = to_host(members[starts[xp.asarray(biggest, dtype=xp.int64)]]) if len(biggest) else []
        host_sizes = to_host(sizes[xp.asarray(biggest, dtype=xp.int64)]) if len(biggest) else []
        largest = [(_key_text(rule.keys, attributes, int(m)), int(z)) for m, z in zip(first_member, host_sizes)]
        refined = {"refined_pairs": 0, "refine_missing": 0, "capped_blocks": 0, "capped_records": 0,
                   "capped_pairs": 0, "skipped": []}
        if bool(over.any()):  # records of an over-cap block are re-blocked by a finer key, or lose theirs
            block_of = xp.searchsorted(starts, xp.arange(len(members)), side="right") - 1
            refined = _refine(xp, keys, members[over[block_of]], rule, attributes, cap, backend, groups, link_type,
                              top)
        all_keys[r] = to_host(keys)
        sorted_blocks.append(None if bool(over.any()) else (members, starts, sizes))
        plans.append(RulePlan(rule.name, len(members), len(sizes), int(pairs[~over].sum()) + refined["refined_pairs"],
                              refined["capped_blocks"], refined["capped_records"], refined["capped_pairs"], largest,
                              refined_blocks=int(over.sum()) if rule.refine_keys else 0,
                              refined_pairs=refined["refined_pairs"], refine_missing=refined["refine_missing"],
                              skipped=refined["skipped"]))
    return BlockingKeys([r.name for r in config.rules], all_keys, plans, raw_keys, sorted_blocks)


# ---------------------------------------------------------------------------------------------
# Pairs
# ---------------------------------------------------------------------------------------------
@numba.njit(cache=True)
def _new_pair(a: int, b: int, tests: np.ndarray, groups: np.ndarray, link_type: int) -> bool:
    """A pair is new for this rule unless it is one deterministic person (tests[:, 0]: the
    records' labels), the link type rules it out (1, link_only: one group; 2, dedupe_only: two
    groups), or an earlier rule had it (tests[:, 1:]: the earlier rules' keys)."""
    if tests[a, 0] == tests[b, 0]:
        return False
    if link_type == LINK_ONLY and groups[a] == groups[b]:
        return False
    if link_type == DEDUPE_ONLY and groups[a] != groups[b]:
        return False
    for earlier in range(1, tests.shape[1]):
        key = tests[a, earlier]
        if key != 0 and key == tests[b, earlier]:
            return False
    return True


@numba.njit(parallel=True, cache=True)
def _count_new(members: np.ndarray, starts: np.ndarray, tests: np.ndarray, groups: np.ndarray,
               link_type: int) -> np.ndarray:
    counts = np.zeros(len(starts) - 1, dtype=np.int64)
    for block in numba.prange(len(starts) - 1):
        c = 0
        for i in range(starts[block], starts[block + 1]):
            for j in range(i + 1, starts[block + 1]):
                if _new_pair(members[i], members[j], tests, groups, link_type):
                    c += 1
        counts[block] = c
    return counts


@numba.njit(parallel=True, cache=True)
def _fill_new(members: np.ndarray, starts: np.ndarray, tests: np.ndarray, groups: np.ndarray, link_type: int,
              offsets: np.ndarray, left: np.ndarray, right: np.ndarray) -> None:
    for block in numba.prange(len(starts) - 1):
        k = offsets[block]
        for i in range(starts[block], starts[block + 1]):
            for j in range(i + 1, starts[block + 1]):
                a, b = members[i], members[j]
                if _new_pair(a, b, tests, groups, link_type):
                    left[k], right[k] = min(a, b), max(a, b)
                    k += 1


def _pair_tests(all_keys: np.ndarray, rule: int, labels: np.ndarray) -> np.ndarray:
    """What _new_pair reads of a record, in one row: its deterministic label (as uint64), then its
    keys of the rules before `rule`. The (rules x records) key matrix puts each rule's key of a
    record in another cache line: at millions of records, a cache miss per rule and pair end."""
    tests = np.empty((all_keys.shape[1], rule + 1), dtype=np.uint64)
    tests[:, 0] = np.ascontiguousarray(labels, dtype=np.int64).view(np.uint64)
    tests[:, 1:] = all_keys[:rule].T
    return tests


def rule_pairs(blocking: BlockingKeys, rule: int, labels: np.ndarray,
               scope: PairScope | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The new candidate pairs of one rule (left < right record positions), in a fixed order."""
    return rule_pairs_of(blocking.keys, rule, labels, scope)


def rule_pairs_of(all_keys: np.ndarray, rule: int, labels: np.ndarray,
                  scope: PairScope | None = None, blocks: tuple | None = None) -> tuple[np.ndarray, np.ndarray]:
    """rule_pairs over a keys matrix (rules x records), the records' deterministic labels and the
    pair scope (link type and groups, or None): the bucketed passes and the dask engine call it on
    one bucket of records at a time. `blocks`: _blocks of the rule's keys, when known."""
    # records stay in position order inside a block
    members, _, sizes = _blocks(np, all_keys[rule]) if blocks is None else (to_host(b) for b in blocks)
    multi = sizes >= 2
    members = members[np.repeat(multi, sizes)].astype(np.int64)
    starts = np.concatenate([[0], np.cumsum(sizes[multi])]).astype(np.int64)
    tests = _pair_tests(all_keys, rule, labels)
    link_type, groups = _scope_arrays(scope)
    counts = _count_new(members, starts, tests, groups, link_type)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    left = np.empty(offsets[-1], dtype=np.int32)
    right = np.empty(offsets[-1], dtype=np.int32)
    _fill_new(members, starts, tests, groups, link_type, offsets, left, right)
    return left, right


@numba.njit(parallel=True, cache=True)
def _agreement_masks(keys: np.ndarray, left: np.ndarray, right: np.ndarray, out: np.ndarray) -> None:
    """agreement_masks on the host in one pass over the pairs (not two gathers per rule); `keys`
    is records x rules here (a record's keys in one cache line)."""
    n_rules = keys.shape[1]
    refined = np.uint64(REFINED)
    for k in numba.prange(len(left)):
        a, b = left[k], right[k]
        mask = 0
        for r in range(n_rules):
            key = keys[a, r]
            if key != 0 and key == keys[b, r]:
                mask |= 1 << (n_rules + r if key & refined else r)
        out[k] = mask


def agreement_masks(keys, left, right):
    """Per pair, a bit per blocking rule whose (effective) key the two records share: the training
    sessions a pair belongs to (every pair in the rule's blocks, whichever rule produced it). Bit r
    for rule r's blocks, bit n_rules + r for its refined blocks (their pairs also agree on the
    refine keys, so they train apart, without the refine columns)."""
    xp = module_of(left)
    if xp is np and isinstance(keys, np.ndarray) and len(left):
        out = np.empty(len(left), dtype=np.int64)
        _agreement_masks(np.ascontiguousarray(keys.T, dtype=np.uint64), np.ascontiguousarray(left, dtype=np.int64),
                         np.ascontiguousarray(right, dtype=np.int64), out)
        return out
    n_rules = keys.shape[0]
    mask = xp.zeros(len(left), dtype=xp.int64)
    refined = xp.uint64(REFINED)
    for r in range(n_rules):
        a = keys[r][left]
        shared = (a != 0) & (a == keys[r][right])
        in_refined = (a & refined) != 0
        mask |= (shared & ~in_refined).astype(xp.int64) << r
        mask |= (shared & in_refined).astype(xp.int64) << (n_rules + r)
    return mask


@dataclass
class CandidatePairs:
    left: np.ndarray  # int32 record positions, left < right
    right: np.ndarray
    rule: np.ndarray  # int8: index of the rule that produced the pair
    per_rule: list[int]

    def __len__(self) -> int:
        return len(self.left)


def candidate_pairs(blocking: BlockingKeys, labels: np.ndarray, backend: Backend = CPU,
                    scope: PairScope | None = None) -> CandidatePairs:
    """The union of all rules' pairs, each once, without pairs inside one deterministic person (and,
    with a scope, only the pairs its link type allows). On a GPU backend the pairs are made and
    stay on the device (arrays of backend.xp); the backend picks how a rule's pairs are made
    (compute/dispatch.py: RULE_PAIRS)."""
    xp = backend.xp
    make = RULE_PAIRS[choose("rule_pairs", backend)]
    lefts, rights, rules, per_rule = [], [], [], []
    keys = xp.asarray(blocking.keys)
    labels = xp.asarray(np.ascontiguousarray(labels, dtype=np.int64))
    scope = scope.on(xp) if scope is not None else None
    known_blocks, blocking.blocks = blocking.blocks or [None] * len(blocking.rules), None  # used once (memory)
    for r in range(len(blocking.rules)):
        left, right = make(xp, keys, r, labels, scope, known_blocks[r])
        lefts.append(left)
        rights.append(right)
        rules.append(xp.full(len(left), r, dtype=xp.int8))
        per_rule.append(len(left))
    return CandidatePairs(xp.concatenate(lefts), xp.concatenate(rights), xp.concatenate(rules), per_rule)


def _compiled_rule_pairs(xp: ModuleType, keys, rule: int, labels, scope: PairScope | None, blocks=None):
    return rule_pairs_of(keys, rule, labels, scope, blocks)


def _array_rule_pairs(xp: ModuleType, keys, rule: int, labels, scope: PairScope | None, blocks=None):
    blocks = None if blocks is None else tuple(xp.asarray(b) for b in blocks)
    return rule_pairs_xp(xp, keys, rule, labels, scope=scope, blocks=blocks)


# One rule's pairs, by implementation (compute/dispatch.py chooses): the compiled kernels on host
# arrays, or array operations in the backend's array module.
RULE_PAIRS = {"compiled": _compiled_rule_pairs, "xp": _array_rule_pairs}


# ---------------------------------------------------------------------------------------------
# Pairs with array operations (the GPU path): every pair of a block from its index alone
# ---------------------------------------------------------------------------------------------
PAIR_CHUNK = 1 << 25  # pair indexes expanded at once (bounds the temporary arrays)


def _pairs_before_row(i, n):
    """Pairs of a block of n records that come before row i: rows 0..i-1 hold n-1, n-2, ... pairs."""
    return i * (2 * n - i - 1) // 2


def _row_and_column(xp: ModuleType, t, n):
    """The (i, j), i < j, of pair t in the row-major order of a block of n records."""
    b = 2.0 * n.astype(xp.float64) - 1.0
    i = xp.floor((b - xp.sqrt(xp.maximum(b * b - 8.0 * t.astype(xp.float64), 0.0))) / 2.0).astype(xp.int64)
    i = xp.minimum(xp.maximum(i, 0), n - 2)
    for _ in range(2):  # float rounding can be one row off either way
        i = xp.where(_pairs_before_row(i + 1, n) <= t, i + 1, i)
        i = xp.where(_pairs_before_row(i, n) > t, i - 1, i)
    return i, t - _pairs_before_row(i, n) + i + 1


def _new_pairs_xp(xp: ModuleType, a, b, rule: int, keys, labels, scope: PairScope | None = None):
    keep = labels[a] != labels[b]
    if scope is not None:
        keep &= scope.allows(a, b)
    for earlier in range(rule):
        ka = keys[earlier, a]
        keep &= ~((ka != 0) & (ka == keys[earlier, b]))
    return keep


def rule_pairs_xp(xp: ModuleType, keys, rule: int, labels, chunk: int = PAIR_CHUNK, scope: PairScope | None = None,
                  blocks: tuple | None = None):
    """rule_pairs with array operations, same pairs in the same order (`scope`'s groups in xp's
    memory): block by block (ascending
    key), then by row and column inside the block. Pair p of the rule is found from p alone (its
    block by a binary search over cumulative pair counts, its row by inverting the triangular
    count), so the work is even across GPU threads however uneven the blocks are. `blocks`:
    _blocks of the rule's keys, when known."""
    members, starts, sizes = _blocks(xp, keys[rule]) if blocks is None else blocks
    multi = sizes >= 2
    starts, sizes = starts[multi], sizes[multi]
    counts = sizes * (sizes - 1) // 2
    ends = xp.cumsum(counts)
    total = int(ends[-1]) if len(ends) else 0
    lefts, rights = [xp.zeros(0, dtype=xp.int32)], [xp.zeros(0, dtype=xp.int32)]
    for lo in range(0, total, chunk):
        p = xp.arange(lo, min(lo + chunk, total), dtype=xp.int64)
        block = xp.searchsorted(ends, p, side="right")
        n = sizes[block]
        i, j = _row_and_column(xp, p - (ends[block] - counts[block]), n)
        a, b = members[starts[block] + i], members[starts[block] + j]
        keep = _new_pairs_xp(xp, a, b, rule, keys, labels, scope)
        a, b = a[keep], b[keep]
        lefts.append(xp.minimum(a, b).astype(xp.int32))
        rights.append(xp.maximum(a, b).astype(xp.int32))
    return xp.concatenate(lefts), xp.concatenate(rights)
