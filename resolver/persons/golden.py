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

from resolver.config import Config, field_kind, golden_fields
from resolver.kernels.strings import encode_for_comparison, jaro_winkler
from resolver.ingest.attributes import normalize_attribute
from resolver.ingest.memo import NormalizationMemo
from resolver.matching.compare import nickname_groups

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
    """One row per (record, field value) a person could take its value from."""

    person: np.ndarray  # dense person index
    record: np.ndarray  # record_id
    key: np.ndarray  # int64 code of the value in match form (equal codes: the same value)
    display: pd.Series  # the value as shown in the golden record


def _candidates(records: pd.DataFrame, person_index: np.ndarray, field: str, kind: str, config: Config,
                normalized: pd.Series | None = None, memo: NormalizationMemo | None = None) -> _Candidates:
    raw = records[field].reset_index(drop=True) if field in records else pd.Series(pd.NA, index=range(len(records)), dtype="str")
    if normalized is None:
        normalized = normalize_attribute(kind, raw, config, memo)
    usable = (person_index >= 0) & normalized.notna().to_numpy()
    trimmed = None
    if kind not in NORMALIZED_DISPLAY:
        trimmed = raw.astype("str").str.strip()
        usable &= (trimmed.fillna("") != "").to_numpy()
    rows = np.flatnonzero(usable)
    match_form = normalized.iloc[rows].reset_index(drop=True)
    if kind == "number":
        display = match_form.map(lambda v: f"{v:g}").astype("str")
    elif kind in NORMALIZED_DISPLAY:
        display = match_form.astype("str")
    else:  # the trimmed text already made (not a second trimmed copy: memory)
        display = trimmed.iloc[rows].reset_index(drop=True)
    key = pd.factorize(match_form.astype("str"))[0].astype(np.int64)
    return _Candidates(person_index[rows], rows.astype(np.int64), key, display)


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
    """Per candidate: lower is better under `rule`."""
    if rule == "source_priority":
        return source_priority_rank(ranks[c.record])
    if rule == "most_recent":
        return most_recent_rank(records["timestamp"].to_numpy("datetime64[ns]").view(np.int64)[c.record])
    if rule == "most_frequent":
        pair = c.person * (int(c.key.max(initial=0)) + 1) + c.key
        _, inverse, counts = np.unique(pair, return_inverse=True, return_counts=True)
        return most_frequent_rank(counts[inverse.reshape(-1)])
    if rule == "longest":
        return longest_rank(c.display.str.len().to_numpy(np.int64))
    if rule == "first_non_null":
        return first_non_null_rank(c.record)
    raise ValueError(f"unknown survivorship rule {rule!r}")


def _survive(c: _Candidates, chain: list[str], records: pd.DataFrame, ranks: np.ndarray, n_persons: int):
    """Winner row per person (-1 = no candidate) and the index of the deciding rule per person
    (len(chain) = tiebreak, -1 = agreement or no candidate)."""
    scores = [_rule_scores(rule, c, records, ranks) for rule in chain]
    order = np.lexsort((c.record, *reversed(scores), c.person))
    person_sorted = c.person[order]
    first = np.ones(len(order), dtype=bool)
    first[1:] = person_sorted[1:] != person_sorted[:-1]
    winner = np.full(n_persons, -1, dtype=np.int64)
    winner[person_sorted[first]] = order[first]

    has = winner >= 0
    win_of = winner[c.person]  # per candidate: its person's winning row
    differs = c.key != c.key[win_of]
    distinct = np.bincount(c.person[differs], minlength=n_persons) > 0
    deciding = np.full(n_persons, -1, dtype=np.int64)
    undecided = distinct.copy()
    tied = np.ones(len(c.person), dtype=bool)
    for k, score in enumerate(scores):
        tied &= score == score[win_of]
        still = np.bincount(c.person[tied & differs], minlength=n_persons) > 0
        decided_now = undecided & ~still
        deciding[decided_now] = k
        undecided &= still
    deciding[undecided] = len(chain)
    return winner, deciding, has, distinct


def _name_similarities(values_a: pd.Series, values_b: pd.Series) -> np.ndarray:
    """Jaro-Winkler of each pair of lower-cased names; a known nickname of the other (Larry and
    Lawrence) counts as 1."""
    both = pd.concat([values_a, values_b], ignore_index=True)
    n = len(values_a)
    similarity = jaro_winkler(encode_for_comparison(both), np.arange(n), np.arange(n, 2 * n))
    groups = nickname_groups()
    nickname = [bool(set(groups.get(a, ())) & set(groups.get(b, ()))) for a, b in zip(values_a.fillna(""), values_b.fillna(""))]
    return np.where(np.array(nickname, dtype=bool), 1.0, similarity)


def build_golden(records: pd.DataFrame, record_person: pd.Series, person_ids: pd.Series, config: Config,
                 normalized: dict[str, pd.Series] | None = None, memo: NormalizationMemo | None = None) -> GoldenResult:
    """Golden records (one row per person, in person_ids order) and the conflict log.

    records: the run's records (record_id order) with source, record_key, timestamp, is_deleted and
    the raw attribute columns; record_person: person id per record (NA for records in no person);
    person_ids: every person, in output order; normalized: attributes already in match form (the
    matching stage's), reused instead of normalizing again; memo: the run's normalization memo, for
    the other fields."""
    golden = config.golden
    normalized = normalized or {}
    person_index = pd.Categorical(record_person.astype("str"), categories=person_ids.astype("str")).codes.astype(np.int64)
    person_index = np.where(records["is_deleted"].to_numpy(bool), -1, person_index)
    n_persons = len(person_ids)
    rank_of = source_ranks(config)
    source_names = records["source"].astype("category")
    ranks = np.array([rank_of[c] for c in source_names.cat.categories], dtype=np.int64)[source_names.cat.codes.to_numpy()]

    def one_field(field: str):
        kind = field_kind(config, field)
        chain = golden.chain(field)
        c = _candidates(records, person_index, field, kind, config, normalized.get(field), memo)
        winner, deciding, has, distinct = _survive(c, chain, records, ranks, n_persons)
        labels = ["agreement", *chain, "tiebreak"]
        rule = pd.Categorical.from_codes(np.where(has, np.where(distinct, deciding + 1, 0), -1), categories=labels)
        columns = _field_columns(field, c, winner, has, rule, records, source_names)
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
                   records: pd.DataFrame, sources: pd.Series) -> dict:
    """The field's golden value and its provenance (source, record key, timestamp, rule); Arrow
    and categorical columns are gathered with take, never through Python objects."""
    missing = ~has
    win = np.where(has, winner, 0)
    record = c.record[win] if len(c.record) else np.zeros(len(winner), dtype=np.int64)
    any_record = len(records) > 0

    def gather(column: pd.Series, rows: np.ndarray) -> pd.Series:
        if not len(column):
            return pd.Series([None] * len(rows), dtype="str")
        out = column.take(rows).reset_index(drop=True)
        return out.mask(missing) if isinstance(out.dtype, pd.CategoricalDtype) else out.where(~missing)

    timestamps = records["timestamp"].to_numpy("datetime64[ns]")[record] if any_record else record.astype("datetime64[ns]")
    return {
        field: gather(c.display, win) if len(c.record) else pd.Series([None] * len(has), dtype="str"),
        f"{field}__source": gather(sources, record),
        f"{field}__record_key": gather(records["record_key"].astype("str"), record),
        f"{field}__timestamp": np.where(has, timestamps, np.datetime64("NaT")).astype("datetime64[ns]"),
        f"{field}__rule": pd.Series(rule),
    }


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
    order = np.lexsort((record, key, person))  # the shown form of a value: its first record's
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
    chosen_value = c.display.take(win).reset_index(drop=True)
    table = pd.DataFrame({
        "person_id": person_ids.take(group_person).reset_index(drop=True).astype("str"),
        "field": field,
        "value": c.display.take(rows[starts]).reset_index(drop=True).astype("str"),
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
