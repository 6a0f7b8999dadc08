"""Golden records: one row per person with each field's surviving value and its provenance, and the
conflict log of every field whose records disagree.

For each field, the candidates are a person's active records that hold a usable value. Values are
compared in match form (normalized by the attribute's kind: "JOHN" and "john" agree, a junk email
is no value). The field's rule chain (golden.fields, else golden.rules) ranks the candidates; each
rule keeps the best and hands ties to the next, and the record first in source order breaks what
ties remain. The deciding rule is the first one after which every remaining candidate holds the
chosen value ("agreement" when all candidates agree from the start, "tiebreak" when no rule decides).

Rules: source_priority (golden.source_priority, then source trust), most_recent (record timestamp),
most_frequent (value held by most of the person's records), longest (most characters),
first_non_null (first record in source order: configured source order, then file and row). Each
rule is written once, as a rank key (`source_priority_rank`, ...): serve ranks a value it receives
against the held one with the same functions (sync/resolve.py: Resolver._wins).

Displayed values: emails, phones, dates and numbers in their normalized form (E.164, ISO dates);
names and text as the winning record wrote them, trimmed.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from numba import njit

from resolver.config import Config, field_kind, golden_fields
from resolver.kernels.strings import encode_for_comparison, jaro_winkler
from resolver.ingest.attributes import normalize_attribute
from resolver.ingest.memo import NormalizationMemo
from resolver.matching.compare import nickname_index, are_nicknames

NORMALIZED_DISPLAY = ("email", "phone", "date", "number")
_BIG = np.iinfo(np.int64).max
UNKNOWN_TIME = np.iinfo(np.int64).min  # NaT as int64 nanoseconds


@dataclass
class GoldenResult:
    golden_records: pd.DataFrame
    conflicts: pd.DataFrame
    summary: dict


def raw_fields(config: Config) -> list[str]:
    """The fields whose golden value shows the record's own text: build_golden reads those record
    columns as written (the others only in match form)."""
    return [f for f in golden_fields(config) if field_kind(config, f) not in NORMALIZED_DISPLAY]


def source_ranks(config: Config) -> dict[str, int]:
    """Source name -> rank (0 = most trusted): golden.source_priority first, then trust, then order."""
    listed = list(config.golden.source_priority)
    rest = sorted((s for s in config.sources if s.name not in listed),
                  key=lambda s: (s.trust, [x.name for x in config.sources].index(s.name)))
    return {name: rank for rank, name in enumerate(listed + [s.name for s in rest])}


@dataclass
class _Candidates:
    """One row per (record, field value) a person could take its value from, in person order and
    then record order (so that each person's candidates are one run: `starts`)."""

    person: np.ndarray  # dense person index
    record: np.ndarray  # record_id
    key: np.ndarray  # int64 key of the value in match form (within a person, equal keys: the same value)
    display: pd.Series  # per record (record_id order, not per candidate): the value as shown in the golden record
    starts: np.ndarray  # each person's first candidate


def _candidates(records: pd.DataFrame, person_index: np.ndarray, by_person: np.ndarray, field: str, kind: str,
                config: Config, normalized: pd.Series | None = None, memo: NormalizationMemo | None = None,
                ) -> _Candidates:
    """by_person: the records of a person, in person order and then record order."""
    raw = records[field].reset_index(drop=True) if field in records else pd.Series(pd.NA, index=range(len(records)), dtype="str")
    if normalized is None:
        normalized = normalize_attribute(kind, raw, config, memo)
    normalized = normalized.reset_index(drop=True)
    usable = normalized.notna().to_numpy().copy()  # narrowed below (to_numpy may share a read-only buffer)
    # Shown values and codes for every record, then picked by index: no strings are gathered per candidate.
    if kind == "number":
        display = normalized.map(lambda v: f"{v:g}", na_action="ignore").astype("str")
    elif kind in NORMALIZED_DISPLAY:
        display = normalized.astype("str")
    else:  # the record's own text, trimmed
        display = raw.astype("str").str.strip()
        usable &= _non_empty(display)
    rows = by_person[usable[by_person]].astype(np.int64)
    person = person_index[rows]
    starts = _run_starts(person)
    return _Candidates(person, rows, _value_keys(normalized.astype("str"), rows, starts), display, starts)


def _non_empty(text: pd.Series) -> np.ndarray:
    """Where a text column holds a value of at least one character (from Arrow's offsets)."""
    lengths = pc.binary_length(pa.array(text.array, type=pa.large_string()))
    return pc.fill_null(pc.greater(lengths, 0), False).to_numpy(zero_copy_only=False)


LONG_RUN = 32  # a person with more candidates has its values dictionary-encoded instead of compared pairwise


def _value_keys(values: pd.Series, rows: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Per candidate (`rows`: its record), an int64 key of its value, equal for equal values of one
    person (keys are only ever compared within a person). A person's few values are compared
    with each other (numba, over the Arrow buffers); a long run's are hash-encoded."""
    if not len(rows):
        return np.zeros(0, dtype=np.int64)
    strings = pa.array(values.array, type=pa.large_string())
    if isinstance(strings, pa.ChunkedArray):  # one buffer to index
        strings = strings.combine_chunks()
    offsets = np.frombuffer(strings.buffers()[1], dtype=np.int64)[strings.offset:strings.offset + len(strings) + 1]
    data = strings.buffers()[2]
    data = np.frombuffer(data, dtype=np.uint8) if data is not None else np.zeros(0, dtype=np.uint8)
    key = _first_equal_in_run(starts, rows, offsets, data, LONG_RUN)
    long = key < 0
    if long.any():  # past the pairwise keys (candidate positions)
        encoded = pc.dictionary_encode(strings.take(pa.array(rows[long]))).indices
        key[long] = len(key) + encoded.to_numpy(zero_copy_only=False).astype(np.int64)
    return key


def _run_starts(sorted_values: np.ndarray) -> np.ndarray:
    """Where each run of equal values of a sorted array starts."""
    change = np.ones(len(sorted_values), dtype=bool)
    change[1:] = sorted_values[1:] != sorted_values[:-1]
    return np.flatnonzero(change)


# ---------------------------------------------------------------------------------------------
# The survivorship rules, each once, as a rank key: lower is better. They take arrays or single
# values alike: build_golden ranks every candidate of a field at once (_rule_scores), sync ranks
# an event's value against the held one (sync/resolve.py: Resolver._wins).
# ---------------------------------------------------------------------------------------------
def source_priority_rank(source_rank):
    """By source rank (source_ranks: 0 = most trusted)."""
    return source_rank


def most_recent_rank(timestamp_ns):
    """By record time (int64 nanoseconds), newest first; an unknown time (NaT) ranks last."""
    unknown = timestamp_ns == UNKNOWN_TIME
    return np.where(unknown, _BIG, -np.where(unknown, 0, timestamp_ns))  # NaT is never negated (it overflows)


def most_frequent_rank(records_holding):
    """By how many of the person's records hold the value, most first."""
    return -records_holding


def longest_rank(characters):
    """By the displayed value's length, longest first."""
    return -characters


def first_non_null_rank(record_order):
    """By the record's place in source order (configured sources, then file and row)."""
    return record_order


def _rule_scores(rule: str, c: _Candidates, records: pd.DataFrame, ranks: np.ndarray) -> np.ndarray:
    """Per candidate: lower is better under `rule` (int64)."""
    if rule == "source_priority":
        return source_priority_rank(ranks[c.record])
    if rule == "most_recent":
        return most_recent_rank(records["timestamp"].to_numpy("datetime64[ns]").view(np.int64)[c.record])
    if rule == "most_frequent":
        return most_frequent_rank(_value_counts(c.starts, c.key, LONG_RUN))
    if rule == "longest":
        return longest_rank(c.display.take(c.record).str.len().to_numpy(np.int64))
    if rule == "first_non_null":
        return first_non_null_rank(c.record)
    raise ValueError(f"unknown survivorship rule {rule!r}")


def _survive(c: _Candidates, chain: list[str], records: pd.DataFrame, ranks: np.ndarray, n_persons: int):
    """Winner row per person (-1 = no candidate) and the index of the deciding rule per person
    (len(chain) = tiebreak, -1 = agreement or no candidate)."""
    scores = np.empty((len(chain), len(c.record)), dtype=np.int64)  # a row per rule
    for row, rule in enumerate(chain):
        scores[row] = _rule_scores(rule, c, records, ranks)
    best, decided_by, disagree = _survive_runs(c.starts, scores, c.key)
    persons = c.person[c.starts]
    winner = np.full(n_persons, -1, dtype=np.int64)
    winner[persons] = best
    deciding = np.full(n_persons, -1, dtype=np.int64)
    deciding[persons] = decided_by
    distinct = np.zeros(n_persons, dtype=bool)
    distinct[persons] = disagree
    return winner, deciding, winner >= 0, distinct


# Loops over each person's run of candidates (numba; nogil: fields are worked on in threads).
@njit(cache=True, nogil=True)
def _first_equal_in_run(starts, rows, offsets, data, longest_run):
    """Per candidate: the first candidate of its person whose string (record `rows[i]` of the
    Arrow `offsets`/`data`) is the same, for persons of up to `longest_run` candidates; -1 for
    the candidates of longer ones."""
    n = len(rows)
    out = np.empty(n, dtype=np.int64)
    for p in range(len(starts)):
        s, e = starts[p], starts[p + 1] if p + 1 < len(starts) else n
        if e - s > longest_run:
            out[s:e] = -1
            continue
        for i in range(s, e):
            out[i] = i
            a0, a1 = offsets[rows[i]], offsets[rows[i] + 1]
            for j in range(s, i):
                b0, b1 = offsets[rows[j]], offsets[rows[j] + 1]
                if out[j] == j and a1 - a0 == b1 - b0 and np.array_equal(data[a0:a1], data[b0:b1]):
                    out[i] = j
                    break
    return out


@njit(cache=True, nogil=True)
def _value_counts(starts, key, long_run):
    """Per candidate: how many of its person's candidates hold its value (persons of more than
    `long_run` candidates: by sorting)."""
    n = len(key)
    out = np.empty(n, dtype=np.int64)
    for p in range(len(starts)):
        s, e = starts[p], starts[p + 1] if p + 1 < len(starts) else n
        if e - s <= long_run:  # a few: counted pairwise, without sorting
            for i in range(s, e):
                out[i] = 0
                for j in range(s, e):
                    out[i] += key[j] == key[i]
            continue
        order = np.argsort(key[s:e]) + s
        i = 0
        while i < e - s:
            j = i
            while j < e - s and key[order[j]] == key[order[i]]:
                j += 1
            for m in range(i, j):
                out[order[m]] = j - i
            i = j
    return out


@njit(cache=True, nogil=True)
def _survive_runs(starts, scores, key):
    """Per person (a run of candidates from `starts`): the winner, the candidate with the smallest
    scores (compared rule by rule; the first in order wins a tie: the first record); the index of
    the rule after which no candidate with another value is still tied with the winner (-1 when
    all agree, len(scores) when none decides: tiebreak); whether its candidates disagree."""
    n, n_rules = len(key), scores.shape[0]
    winner = np.empty(len(starts), dtype=np.int64)
    deciding = np.full(len(starts), -1, dtype=np.int64)
    distinct = np.zeros(len(starts), dtype=np.bool_)
    tied = np.empty(n, dtype=np.bool_)  # a candidate with another value, tied with the winner so far
    for p in range(len(starts)):
        s, e = starts[p], starts[p + 1] if p + 1 < len(starts) else n
        w = s
        for i in range(s + 1, e):
            for r in range(n_rules):
                if scores[r, i] != scores[r, w]:
                    if scores[r, i] < scores[r, w]:
                        w = i
                    break
        winner[p] = w
        for i in range(s, e):
            tied[i] = key[i] != key[w]
            distinct[p] |= tied[i]
        if not distinct[p]:
            continue
        deciding[p] = n_rules
        for r in range(n_rules):
            still = False
            for i in range(s, e):
                tied[i] = tied[i] and scores[r, i] == scores[r, w]
                still |= tied[i]
            if not still:
                deciding[p] = r
                break
    return winner, deciding, distinct


def _name_similarities(values_a: pd.Series, values_b: pd.Series) -> np.ndarray:
    """Jaro-Winkler of each pair of lower-cased names; a known nickname of the other (Larry and
    Lawrence) counts as 1."""
    both = pd.concat([values_a, values_b], ignore_index=True)
    n = len(values_a)
    similarity = jaro_winkler(encode_for_comparison(both), np.arange(n), np.arange(n, 2 * n))
    codes, names = pd.factorize(both.fillna(""))  # each distinct name looked up once
    number, _ = nickname_index()
    ids = np.array([number.get(name, -1) for name in names.tolist()], dtype=np.int32)[codes]
    return np.where(are_nicknames(ids[:n], ids[n:]), 1.0, similarity)


def build_golden(records: pd.DataFrame, record_person: pd.Series, person_ids: pd.Series, config: Config,
                 normalized: dict[str, pd.Series] | None = None, memo: NormalizationMemo | None = None,
                 person_rows: np.ndarray | None = None) -> GoldenResult:
    """Golden records (one row per person, in person_ids order) and the conflict log.

    records: the run's records (record_id order) with source, record_key, timestamp, is_deleted and
    the raw attribute columns; record_person: person id per record (NA for records in no person);
    person_ids: every person, in output order; normalized: attributes already in match form (the
    matching stage's), reused instead of normalizing again; memo: the run's normalization memo, for
    the other fields; person_rows: when the caller knows it, per record the position of its person
    in person_ids (-1: none), instead of record_person's ids matched as text."""
    golden = config.golden
    normalized = normalized or {}
    if person_rows is None:
        person_rows = _positions(record_person, person_ids)
    person_index = np.where(records["is_deleted"].to_numpy(bool), -1, person_rows)
    by_person = np.argsort(person_index, kind="stable")  # once for every field: each takes its candidates from it
    by_person = by_person[person_index[by_person] >= 0]
    n_persons = len(person_ids)
    rank_of = source_ranks(config)
    source_names = records["source"].astype("category")
    ranks = np.array([rank_of[c] for c in source_names.cat.categories], dtype=np.int64)[source_names.cat.codes.to_numpy()]
    record_keys = _takeable(records["record_key"].astype("str"))  # once, not for every field

    def one_field(field: str):
        kind = field_kind(config, field)
        chain = golden.chain(field)
        c = _candidates(records, person_index, by_person, field, kind, config, normalized.get(field), memo)
        winner, deciding, has, distinct = _survive(c, chain, records, ranks, n_persons)
        labels = ["agreement", *chain, "tiebreak"]
        rule = pd.Categorical.from_codes(np.where(has, np.where(distinct, deciding + 1, 0), -1), categories=labels)
        columns = _field_columns(field, c, winner, has, rule, records, source_names, record_keys)
        conflict = None
        if distinct.any():
            conflict = _conflicts(field, c, winner, distinct, rule, source_names, person_ids,
                                  field in golden.name_fields, golden.name_similarity)
        return columns, has, distinct, conflict

    fields = golden_fields(config)
    # Sorting and gathering release the GIL: fields are worked on side by side.
    with ThreadPoolExecutor(max_workers=max(1, config.run.workers)) as pool:
        done = list(pool.map(one_field, fields))
    out = {"person_id": person_ids.reset_index(drop=True)}
    conflict_parts = []
    flagged = np.zeros(n_persons, dtype=bool)
    conflicting = np.zeros(n_persons, dtype=np.int64)
    for field, (columns, _has, distinct, conflict) in zip(fields, done):
        out.update(columns)
        conflicting += distinct
        if conflict is not None:
            conflict_parts.append(conflict[0])
            flagged |= conflict[1]
    golden_records = pd.DataFrame(out, copy=False)  # fresh columns: not copied into consolidated blocks (memory)
    golden_records["conflicting_fields"] = conflicting
    golden_records["needs_review"] = flagged
    conflicts = pd.concat(conflict_parts, ignore_index=True) if conflict_parts else _empty_conflicts()
    return GoldenResult(golden_records, conflicts, golden_summary(golden_records, conflicts, fields))


def _positions(values: pd.Series, categories: pd.Series) -> np.ndarray:
    """Per value, its position in `categories` (distinct; -1 for a value not there, or missing):
    an Arrow hash lookup instead of a pandas index of Python strings."""
    found = pc.index_in(pa.array(values.astype("str").array, type=pa.large_string()),
                        value_set=pa.array(categories.astype("str").array, type=pa.large_string()))
    return pc.fill_null(found, -1).to_numpy(zero_copy_only=False).astype(np.int64)


def golden_summary(golden_records: pd.DataFrame, conflicts: pd.DataFrame, fields: list[str]) -> dict:
    """Counts for the run summary, from the tables alone (so that golden records built in parts
    summarize the same)."""
    per_field = {}
    for field in fields:
        mine = conflicts["person_id"][conflicts["field"] == field]
        per_field[field] = {"persons_with_value": int(golden_records[field].notna().sum()),
                            "conflicts": int(mine.nunique())}
    return {"persons": len(golden_records),
            "persons_with_conflicts": int((golden_records["conflicting_fields"] > 0).sum()),
            "persons_flagged_for_review": int(golden_records["needs_review"].sum()), "fields": per_field}


def _field_columns(field: str, c: _Candidates, winner: np.ndarray, has: np.ndarray, rule: pd.Categorical,
                   records: pd.DataFrame, sources: pd.Series, record_keys: pa.Array) -> dict:
    """The field's golden value and its provenance (source, record key, timestamp, rule); Arrow
    and categorical columns are gathered with take, never through Python objects. `record_keys`:
    the records' keys, _takeable."""
    missing = ~has
    win = np.where(has, winner, 0)
    record = c.record[win] if len(c.record) else np.zeros(len(winner), dtype=np.int64)
    any_record = len(records) > 0

    def gather(column: pd.Series, rows: np.ndarray) -> pd.Series:
        if not len(column):
            return _missing_text(len(rows))
        if isinstance(column.dtype, pd.CategoricalDtype):
            codes = np.where(missing, -1, column.cat.codes.to_numpy()[rows])
            return pd.Series(pd.Categorical.from_codes(codes, dtype=column.dtype))
        return _take_text(column, rows, missing)

    timestamps = records["timestamp"].to_numpy("datetime64[ns]")[record] if any_record else record.astype("datetime64[ns]")
    return {
        field: gather(c.display, record) if len(c.record) else _missing_text(len(has)),
        f"{field}__source": gather(sources, record),
        f"{field}__record_key": _take_text(record_keys, record, missing) if len(records) else _missing_text(len(record)),
        f"{field}__timestamp": np.where(has, timestamps, np.datetime64("NaT")).astype("datetime64[ns]"),
        f"{field}__rule": pd.Series(rule),
    }


def _takeable(column: pd.Series) -> pa.Array:
    """A text column as one Arrow array on 32-bit offsets when the text fits them (Arrow's take is
    about twice as fast on those as on 64-bit ones)."""
    strings = pa.array(column.array, type=pa.large_string())
    if isinstance(strings, pa.ChunkedArray):
        strings = strings.combine_chunks()
    narrow = strings.buffers()[2] is None or strings.buffers()[2].size < 2**31
    return strings.cast(pa.string()) if narrow else strings


def _take_text(column: pd.Series | pa.Array, rows: np.ndarray, missing: np.ndarray) -> pd.Series:
    """column[rows] as a "str" column, NA where `missing` (column: a "str" column, or _takeable's
    array of one). The NAs are set by a validity bitmap after the take (a null in the indices
    would slow the take down)."""
    taken = (column if isinstance(column, pa.Array) else _takeable(column)).take(rows)
    valid = ~missing if taken.null_count == 0 else ~missing & taken.is_valid().to_numpy(zero_copy_only=False)
    taken = pa.Array.from_buffers(taken.type, len(taken), [pa.array(valid).buffers()[1], *taken.buffers()[1:]])
    return pd.Series(taken.cast(pa.large_string()), dtype="str")


def _missing_text(n: int) -> pd.Series:
    return pd.Series(pa.nulls(n, pa.large_string()), dtype="str")


CONFLICT_COLUMNS = ["person_id", "field", "value", "records", "sources", "chosen", "chosen_value", "rule",
                    "similarity_to_chosen", "needs_review"]


def _empty_conflicts() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in zip(
        CONFLICT_COLUMNS, ["str", "str", "str", "int64", "str", "bool", "str", "str", "float64", "bool"])})


def _conflicts(field: str, c: _Candidates, winner: np.ndarray, distinct: np.ndarray, rule: pd.Categorical,
               sources: pd.Series, person_ids: pd.Series, is_name: bool, threshold: float):
    """One row per distinct value of the field in each person whose records disagree."""
    rows = np.flatnonzero(distinct[c.person])
    person, key, record = c.person[rows], c.key[rows], c.record[rows]
    # Candidates are in person and record order already (lexsort is stable): by value within each
    # person, each value's records in order (the shown form of a value: its first record's).
    order = np.lexsort((key, person))
    person, key, record, rows = person[order], key[order], record[order], rows[order]
    start = np.ones(len(rows), dtype=bool)
    start[1:] = (person[1:] != person[:-1]) | (key[1:] != key[:-1])
    starts = np.flatnonzero(start)
    names = list(sources.cat.categories)
    bits = np.left_shift(np.int64(1), sources.cat.codes.to_numpy().astype(np.int64)[record])
    masks = np.bitwise_or.reduceat(bits, starts) if len(starts) else bits[:0]
    unique_masks, mask_code = np.unique(masks, return_inverse=True)
    labels = [",".join(n for i, n in enumerate(names) if int(m) >> i & 1) for m in unique_masks]
    group_person = person[starts]
    win = winner[group_person]
    chosen_value = c.display.take(c.record[win]).reset_index(drop=True)
    table = pd.DataFrame({
        "person_id": person_ids.take(group_person).reset_index(drop=True).astype("str"),
        "field": field,
        "value": c.display.take(record[starts]).reset_index(drop=True).astype("str"),
        "records": np.diff(np.append(starts, len(rows))).astype(np.int64),
        "sources": pd.Series(pd.Categorical.from_codes(mask_code.reshape(-1), categories=labels)).astype("str"),
        "chosen": key[starts] == c.key[win],
        "chosen_value": chosen_value.astype("str"),
        "rule": pd.Series(rule.take(group_person)).astype("str"),
    })
    table["similarity_to_chosen"] = np.nan
    needs_review = np.zeros(len(winner), dtype=bool)
    if is_name:
        sim = _name_similarities(table["value"].str.lower(), chosen_value.astype("str").str.lower())
        table["similarity_to_chosen"] = sim
        low = (sim < threshold) & ~table["chosen"].to_numpy()
        needs_review[group_person[low]] = True
    table["needs_review"] = needs_review[group_person]
    # A person's values in the order its records first show them (not in an order that depends on
    # other persons' records), so that golden records built in parts are the same.
    return table.take(np.lexsort((record[starts], group_person))).reset_index(drop=True), needs_review
