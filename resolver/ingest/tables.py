"""From raw source rows to canonical tables: records, identifier observations, collapsed event edges.

Records keep one row each. Events do not survive this stage row by row: each event adds an edge
from its anchor identifier (the strongest one it carries) to each other identifier it carries,
and the edges are collapsed into distinct pairs with a count and first/last seen.

Identifier columns are normalized, blocked and hashed once per distinct raw value, then spread
back to the rows as 64-bit hashes: strings are only kept for the distinct values.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from resolver.config import Config, DateParts, SourceConfig
from resolver.compute.grouping import Groups, positions_in, repeated_in_groups, sorted_unique, unique_with_index
from resolver.ingest.readers import REJECT_COLUMNS, SourceFrame
from resolver.ingest.sessions import sessionize
from resolver.ingest.memo import NormalizationMemo, memoized, memoized_column
from resolver.kernels.hashing import hash_strings
from resolver.normalize import (
    Blocklist, hash_identifiers, normalize_date, normalize_identifier, normalize_name, normalize_trim, to_arrow, to_series,
)

# policy_actions.parquet: what ingest did to values (invalid, blocked) and what the graph's guards did.
ACTION_COLUMNS = ["action", "source", "id_type", "value", "reason", "count"]

TRUTHY = ("true", "1", "yes", "y", "t")
IDENTIFIER_RULE, COOCCURRENCE_RULE = "identifier", "cooccurrence"


@dataclass(frozen=True)
class Vocabulary:
    """Small integer codes for identifier types and link rules, fixed by the config."""

    types: tuple[str, ...]
    rules: tuple[str, ...]

    @classmethod
    def from_config(cls, config: Config) -> "Vocabulary":
        link_rules = sorted({link.rule for s in config.sources for link in s.links})
        return cls(tuple(config.identity.types), (IDENTIFIER_RULE, COOCCURRENCE_RULE, *link_rules))

    def type_code(self, name: str) -> int:
        return self.types.index(name)

    def rule_code(self, name: str) -> int:
        return self.rules.index(name)


@dataclass
class IdentifierColumn:
    """One identifier column, normalized, blocked and hashed."""

    id_type: str
    column: str
    rule: str  # IDENTIFIER_RULE, or the explicit link rule that reads this column
    hash: np.ndarray  # uint64 per row; 0 where missing, invalid or blocked
    values: pd.DataFrame  # hash, value: the normalized text of each distinct hash
    codes: np.ndarray  # per row: position of its raw value among the distinct ones (-1 = missing)
    normalized: pd.Series  # per distinct raw value: its normalized text (NA when dropped)
    flags: pd.DataFrame | None = None  # code, action, value, reason: distinct values a policy action names
    normalizer: str = ""  # the identity type's normalizer (email, phone, trim...)
    blocked: bool = False  # the blocklist was applied (not to a records source's own key)

    def text(self, rows: np.ndarray) -> pd.Series:
        """Normalized text of the given rows (which must hold a value)."""
        return self.normalized.take(self.codes[rows]).reset_index(drop=True)

    @property
    def explicit(self) -> bool:
        return self.rule != IDENTIFIER_RULE


@dataclass
class SourceTables:
    """What one source contributes, in canonical form."""

    name: str
    rows_read: int
    records: pd.DataFrame | None = None  # kind == records
    observations: pd.DataFrame | None = None  # record_pos, type, hash, value, rule, explicit, is_key
    event_nodes: pd.DataFrame | None = None  # hash (sorted), type, value, events, anchored, first/last_seen
    event_edges: pd.DataFrame | None = None  # a, b (rows of event_nodes), type, rule, explicit, count, first_seen
    events: int = 0
    event_ids: np.ndarray | None = None  # sorted hashes of the event ids kept (for cross-file dedupe)
    rejects: list[pd.DataFrame] = field(default_factory=list)
    actions: list[pd.DataFrame] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)  # read / normalize time of this part
    resolved: int = 0  # input rows this part resolved: its records, or its events
    suppressed: int = 0  # records dropped because they match an erasure tombstone
    memo: object | None = None  # the normalization memo lookups of this part (a NormalizationMemo)
    attributes: pd.DataFrame | None = None  # per record: the attributes in match form (when matching is on)
    # (kind, attribute) -> per record, that attribute already in match form (normalized while
    # ingesting: an identifier column or a name), so that match_attributes does not do it again.
    in_match_form: dict[tuple[str, str], pd.Series] | None = None
    sessions: pd.DataFrame | None = None  # events sources with stitching: anonymous-visitor sessions
    flagged: pd.DataFrame | None = None  # kind == records: FLAGGED_COLUMNS (the records' policy actions)
    snapshot: str | None = None  # key of the state snapshot these tables are (or may be saved as)
    loaded: bool = False  # loaded from a state snapshot instead of ingested
    erased: bool = False  # erased data was suppressed from it: no snapshot, its memo lookups not handed on

    def drop_records(self, gone: np.ndarray) -> None:
        """Remove the records where `gone` is True, with their observations and attributes (new
        tables are assigned: a snapshot being written from the old ones is not disturbed)."""
        keep = ~gone
        new_pos = np.cumsum(keep) - 1
        pos = self.observations["record_pos"].to_numpy()
        kept_obs = keep[pos]
        self.observations = self.observations[kept_obs].assign(record_pos=new_pos[pos[kept_obs]]).reset_index(drop=True)
        self.records = self.records[keep].reset_index(drop=True)
        if self.flagged is not None:
            pos = self.flagged["record_pos"].to_numpy()
            self.flagged = self.flagged[keep[pos]].assign(record_pos=new_pos[pos[keep[pos]]]).reset_index(drop=True)
        if self.attributes is not None:
            self.attributes = self.attributes[keep].reset_index(drop=True)

    def release_graph_inputs(self) -> None:
        """Drop what only the graph build needs, once it is built (memory)."""
        self.records = self.observations = self.event_nodes = self.event_edges = self.attributes = None
        self.sessions = self.flagged = None


def _reject(frame: pd.DataFrame, mask: np.ndarray, source: str, field: str | None, reason: str, raw=None) -> pd.DataFrame:
    if not mask.any():
        return pd.DataFrame(columns=REJECT_COLUMNS)
    picked = frame[mask]
    return pd.DataFrame(
        {
            "source": source,
            "file": picked["_file"].astype(str).to_numpy(),
            "row": picked["_row"].to_numpy(np.int64),
            "field": field if field else pd.NA,
            "reason": reason,
            "raw": raw[mask].astype("str").str.slice(0, 200).to_numpy() if raw is not None else pd.NA,
        },
        columns=REJECT_COLUMNS,
    )


def _value_actions(action: str, source: str, id_type: str, values: pd.Series, reasons: pd.Series, counts: np.ndarray) -> pd.DataFrame:
    """One row per (value, reason) with how many input rows carried it."""
    present = reasons.notna().to_numpy()
    if not present.any():
        return pd.DataFrame(columns=ACTION_COLUMNS)
    # Only the few values named leave Arrow (not a million Python strings).
    frame = pd.DataFrame(
        {"value": values[present].to_numpy(), "reason": reasons[present].to_numpy(), "count": counts[present]}
    )
    frame = frame.groupby(["value", "reason"], sort=True, dropna=False)["count"].sum().reset_index()
    frame.insert(0, "id_type", id_type)
    frame.insert(0, "source", source)
    frame.insert(0, "action", action)
    return frame[ACTION_COLUMNS]


def spread(per_distinct: np.ndarray, codes: np.ndarray, missing) -> np.ndarray:
    """Values computed per distinct value, back to one per row (codes from pd.factorize; -1 = NA)."""
    out = np.full(len(codes), missing, dtype=per_distinct.dtype)
    present = codes >= 0
    out[present] = per_distinct[codes[present]]
    return out


def date_from_parts(year: pd.Series, month: pd.Series, day: pd.Series) -> pd.Series:
    """ISO dates YYYY-MM-DD from year, month and day columns (text, as read: "1956", "4", "04", or
    "4.0" from a JSON number); NA where a part is missing or not a whole number, the year has not
    four digits, or the three make no calendar date (1999-02-30)."""
    def part(values: pd.Series, digits: str, width: int) -> pa.Array:
        text = pc.replace_substring_regex(pc.utf8_trim_whitespace(to_arrow(values)), r"\.0*$", "")
        ok = pc.fill_null(pc.match_substring_regex(text, f"^[0-9]{{{digits}}}$"), False)
        return pc.if_else(ok, pc.utf8_lpad(text, width, "0"), pa.scalar(None, pa.large_string()))

    joined = pc.binary_join_element_wise(part(year, "4", 4), part(month, "1,2", 2), part(day, "1,2", 2),
                                         pa.scalar("-", pa.large_string()))
    return normalize_date(to_series(joined, year))


def joined_columns(columns: list[pd.Series]) -> pd.Series:
    """The values of several columns joined by a space (each trimmed; missing ones left out),
    missing where all are."""
    # Missing parts as "" and the spaces collapsed after (pyarrow 26's null_handling="skip" drops the
    # rows where every part is null instead of returning null for them)
    parts = [pc.fill_null(pc.utf8_trim_whitespace(to_arrow(c)), "") for c in columns]
    joined = pc.binary_join_element_wise(*parts, pa.scalar(" ", parts[0].type))
    joined = pc.utf8_trim_whitespace(pc.replace_substring_regex(joined, r" {2,}", " "))
    joined = pc.if_else(pc.equal(joined, ""), pa.scalar(None, joined.type), joined)
    return to_series(joined, columns[0])


def built_attribute(spec, columns: list[pd.Series]) -> pd.Series:
    """A built attribute's values from its columns (in spec.columns order)."""
    if isinstance(spec, DateParts):
        return date_from_parts(*columns)
    return joined_columns(columns)


def _coalesce(frame: pd.DataFrame, columns: list[str]) -> pd.Series:
    """First non-empty value across columns, row by row."""
    result = frame[columns[0]]
    for column in columns[1:]:
        result = result.fillna(frame[column])
    return result


def identifier_column(
    config: Config, source: SourceConfig, id_type: str, column: str, rule: str, raw: pd.Series,
    blocklist: Blocklist | None, actions: list, memo: NormalizationMemo | None = None,
) -> IdentifierColumn:
    """Normalize, block (unless `blocklist` is None) and hash one column, working on its distinct
    values only."""
    codes, uniques = pd.factorize(raw, use_na_sentinel=True)
    distinct = pd.Series(uniques, dtype="str")
    counts = np.bincount(codes[codes >= 0], minlength=len(distinct))
    spec = config.identity.types[id_type]
    normalized, reason = memoized(memo, f"identifier:{spec.normalizer}", distinct, lambda values: normalize_identifier(
        spec.normalizer, values, default_region=config.run.default_region,
        email_options=config.identity.email.model_dump(), distinct=True,
    ))
    actions.append(_value_actions("invalid", source.name, id_type, distinct, reason, counts))
    flags = [_flags("invalid", distinct, reason)]
    if blocklist is not None:
        blocked = blocklist.blocked(id_type, normalized, distinct=True)  # of distinct raw values: nearly distinct
        actions.append(_value_actions("blocked", source.name, id_type, normalized, blocked, counts))
        flags.append(_flags("blocked", normalized, blocked))
        normalized = normalized.mask(blocked.notna())
    hashes = hash_identifiers(id_type, normalized)
    row_hash = spread(hashes, codes, np.uint64(0))
    kept = hashes != 0
    values = _first_of_each_hash(pd.DataFrame({"hash": hashes[kept], "value": normalized[kept].reset_index(drop=True)}))
    return IdentifierColumn(id_type, column, rule, row_hash, values, codes, normalized, pd.concat(flags, ignore_index=True),
                            spec.normalizer, blocklist is not None)


def _first_of_each_hash(frame: pd.DataFrame) -> pd.DataFrame:
    """frame.drop_duplicates("hash"), in row order."""
    _, first = unique_with_index(frame["hash"].to_numpy())
    return frame.iloc[np.sort(first)]


def _flags(action: str, values: pd.Series, reasons: pd.Series) -> pd.DataFrame:
    """The distinct values (by code) a policy action names, with what it says of them."""
    code = np.flatnonzero(reasons.notna().to_numpy())
    # Taken in Arrow: only the values named, never all of them as Python strings.
    return pd.DataFrame({"code": code, "action": action,
                         "value": values.iloc[code].astype("str").reset_index(drop=True),
                         "reason": reasons.iloc[code].astype("str").reset_index(drop=True)})


FLAGGED_COLUMNS = ["record_pos", "action", "id_type", "value", "reason"]


def flagged_records(idents: list[IdentifierColumn], position: np.ndarray) -> pd.DataFrame:
    """One row per kept record (`position` >= 0) and policy action naming one of its values: whose
    invalid or blocked values they are, so that erasing the record can take its actions along."""
    frames = []
    for ident in idents:
        if ident.flags is None or not len(ident.flags):
            continue
        rows = np.flatnonzero((ident.codes >= 0) & (position >= 0))
        held = pd.DataFrame({"record_pos": position[rows], "code": ident.codes[rows]})
        frames.append(held.merge(ident.flags, on="code").assign(id_type=ident.id_type))
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype="int64" if c == "record_pos" else "str") for c in FLAGGED_COLUMNS})
    return pd.concat(frames, ignore_index=True)[FLAGGED_COLUMNS]


def identifier_columns(config: Config, source: SourceConfig, frame: pd.DataFrame, blocklist: Blocklist, actions: list,
                       memo: NormalizationMemo | None = None) -> list[IdentifierColumn]:
    mapped = [(t, c, IDENTIFIER_RULE) for t, cols in source.identifier_columns().items() for c in cols]
    mapped += [(link.type, link.column, link.rule) for link in source.links]

    def one(spec: tuple[str, str, str]) -> tuple[IdentifierColumn, list]:
        t, c, r = spec
        mine: list = []
        ident = identifier_column(config, source, t, c, r, frame[c], None if _is_record_key(config, source, t, c, r)
                                  else blocklist, mine, memo)
        return ident, mine

    # Arrow's string kernels release the GIL: columns are normalized side by side (actions in order).
    with ThreadPoolExecutor(max_workers=max(1, min(config.run.workers, len(mapped)))) as pool:
        done = list(pool.map(one, mapped))
    for _, mine in done:
        actions.extend(mine)
    return [ident for ident, _ in done]


def _is_record_key(config: Config, source: SourceConfig, id_type: str, column: str, rule: str) -> bool:
    """A records source's own key column, or an explicit link of a records source to a record-key
    type (MasterRecordId -> sf_contact_id): these name records, never a placeholder someone typed,
    so junk lists do not apply ("0" and "-1" are keys like any other)."""
    if source.kind != "records":
        return False
    if rule == IDENTIFIER_RULE:
        return column == source.key
    return id_type in config.record_key_types()


def distinct_values(idents: list[IdentifierColumn]) -> pd.DataFrame:
    """hash -> normalized value over all identifier columns, sorted by hash."""
    if not idents:
        return pd.DataFrame({"hash": np.zeros(0, np.uint64), "value": pd.Series(dtype="str")})
    values = pd.concat([i.values for i in idents], ignore_index=True).drop_duplicates("hash")
    return values.sort_values("hash", kind="stable").reset_index(drop=True)


def value_of(values: pd.DataFrame, hashes: np.ndarray) -> pd.Series:
    """The normalized text of each hash (every hash must be in `values`), as an Arrow-backed column."""
    return values["value"].take(np.searchsorted(values["hash"].to_numpy(np.uint64), hashes)).reset_index(drop=True)


def _parse_times(values: pd.Series | None, n: int) -> np.ndarray:
    """ISO 8601 text to naive UTC datetime64[ns]; unparseable or missing -> NaT.

    Arrow parses the usual zoned form in C++; anything else (dates, naive times, junk) goes
    through pandas one distinct value at a time.
    """
    if values is None:
        return np.full(n, np.datetime64("NaT"), dtype="datetime64[ns]")
    try:
        parsed = pc.cast(pa.array(values.array), pa.timestamp("ns", tz="UTC"))
        ints = pc.fill_null(parsed.cast(pa.int64()), np.iinfo(np.int64).min)  # null -> NaT
        return ints.to_numpy(zero_copy_only=False).astype(np.int64).view("datetime64[ns]")
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, TypeError):
        pass
    codes, uniques = pd.factorize(values)
    parsed = pd.to_datetime(pd.Series(uniques, dtype="str"), utc=True, errors="coerce", format="ISO8601")
    return spread(parsed.dt.tz_convert(None).to_numpy("datetime64[ns]"), codes, np.datetime64("NaT", "ns"))


DUPLICATE_KEY = "duplicate record key (earlier row kept)"


def reject_cross_file_duplicates(config: Config, parts: list[SourceTables]) -> int:
    """A record key already seen in an earlier file of the same source makes the later row a
    duplicate, as within one file: files are ingested one by one, so this is checked across them
    afterwards (the rows go to the rejects). Returns how many rows were rejected."""
    rejected = 0
    for source in config.sources:
        mine = [p for p in parts if p.name == source.name and p.records is not None]
        if source.kind != "records" or len(mine) < 2:
            continue
        keys = pd.concat([p.records["source_key"] for p in mine], ignore_index=True)
        duplicate = _duplicated(keys)
        if not duplicate.any():
            continue
        offsets = np.cumsum([0] + [len(p.records) for p in mine])
        for k, part in enumerate(mine):
            gone = duplicate[offsets[k]:offsets[k + 1]]
            if not gone.any():
                continue
            dropped = part.records[gone]
            part.rejects.append(pd.DataFrame({
                "source": source.name, "file": dropped["file"].astype(str).to_numpy(), "row": dropped["row"].to_numpy(np.int64),
                "field": source.key, "reason": DUPLICATE_KEY,
                "raw": dropped["record_key"].astype("str").str.slice(0, 200).to_numpy()}, columns=REJECT_COLUMNS))
            part.drop_records(gone)
            part.resolved -= int(gone.sum())
            rejected += int(gone.sum())
    return rejected


def _duplicated(keys: pd.Series) -> np.ndarray:
    """keys.duplicated(keep="first"), missing keys never duplicates. By the keys' 64-bit hashes
    (an integer hash table: Arrow's string one took 2.4 s for 5M keys), the strings deciding among
    rows whose hash repeats, so a hash collision changes nothing."""
    hashes = hash_strings(pa.array(keys.array))
    repeats = pd.Series(hashes).duplicated(keep="first").to_numpy()
    out = np.zeros(len(keys), dtype=bool)
    if repeats.any():
        rows = np.flatnonzero(np.isin(hashes, hashes[repeats]))  # every row of a repeated hash, in order
        out[rows] = keys.iloc[rows].duplicated(keep="first").to_numpy()
    return out & keys.notna().to_numpy()


def _truthy(values: pd.Series) -> np.ndarray:
    return values.str.strip().str.lower().isin(TRUTHY).to_numpy()


def ingest_records(config: Config, source: SourceConfig, raw: SourceFrame, blocklist: Blocklist, vocab: Vocabulary,
                   memo: NormalizationMemo | None = None) -> SourceTables:
    tables = SourceTables(source.name, raw.rows_read, rejects=[raw.rejects])
    frame = raw.frame.reset_index(drop=True)
    idents = identifier_columns(config, source, frame, blocklist, tables.actions, memo)

    key_raw = frame[source.key]
    # The record's own key, normalized like an identifier read from the same column (15 -> 18 chars).
    key_ident = next((i for i in idents if i.column == source.key and not i.explicit), None)
    key_norm = normalize_trim(key_raw)
    missing = key_norm.isna().to_numpy()  # absent, or only whitespace
    if key_ident is not None:
        rows = np.flatnonzero(~pd.isna(key_norm).to_numpy() & (key_ident.hash != 0))
        key_norm = key_norm.mask(key_ident.hash != 0, key_ident.text(rows).set_axis(rows))
    duplicate = _duplicated(key_norm) & ~missing
    tables.rejects.append(_reject(frame, missing, source.name, source.key, "missing record key"))
    tables.rejects.append(_reject(frame, duplicate, source.name, source.key, DUPLICATE_KEY, key_raw))
    keep = ~(missing | duplicate)
    deleted = _truthy(frame[source.deleted]) if source.deleted else np.zeros(len(frame), bool)

    times = _parse_times(frame[source.timestamp] if source.timestamp else None, len(frame))
    def kept(series: pd.Series) -> pd.Series:  # stays an Arrow-backed column, no Python objects
        return series[keep].reset_index(drop=True)

    records = pd.DataFrame(
        {
            "source": _constant_categorical(source.name, int(keep.sum())),
            "record_key": kept(key_raw),
            "source_key": kept(key_norm),
            "trust": source.trust,
            "timestamp": times[keep],
            "is_deleted": deleted[keep],
            "file": pd.Categorical(frame["_file"][keep].astype(str)),
            "row": frame["_row"][keep].to_numpy(np.int64),
        }
    )
    for name, cols in source.attribute_columns().items():
        records[name] = kept(_coalesce(frame, cols))
    for name, spec in source.built_attributes().items():
        records[name] = kept(built_attribute(spec, [frame[c] for c in spec.columns]))
    for name in ("first_name", "last_name"):
        if name in records:
            records[f"{name}_norm"] = memoized_column(memo, "name", records[name], normalize_name)

    position = np.full(len(frame), -1, dtype=np.int64)
    position[keep] = np.arange(int(keep.sum()))
    parts = []
    for ident in idents:
        has = (ident.hash != 0) & keep
        if not ident.explicit:
            # A deleted record keeps only its own id, so that merges into it can still be followed.
            has &= ~deleted | (ident.column == source.key)
        rows = np.flatnonzero(has)
        parts.append(
            pd.DataFrame(
                {
                    "value": ident.text(rows),
                    "record_pos": position[rows],
                    "type": np.int16(vocab.type_code(ident.id_type)),
                    "hash": ident.hash[rows],
                    "rule": np.int16(vocab.rule_code(ident.rule)),
                    "explicit": ident.explicit,
                    "is_key": ident is key_ident,
                }
            )
        )
    obs = pd.concat(parts, ignore_index=True) if parts else _no_observations()
    # A deleted record that was not merged anywhere leaves the graph entirely.
    merged = np.zeros(len(records), bool)
    merged[obs.loc[obs["explicit"], "record_pos"].to_numpy()] = True
    orphan = records["is_deleted"].to_numpy() & ~merged
    obs = obs[~orphan[obs["record_pos"].to_numpy()]]
    repeated = repeated_in_groups(obs["record_pos"].to_numpy(np.int64), obs["hash"].to_numpy(np.uint64),
                                  obs["rule"].to_numpy(), len(records))
    obs = obs[~repeated].reset_index(drop=True)
    tables.records = records
    tables.observations = obs
    tables.flagged = flagged_records(idents, position)
    if memo is None:  # with a memo, each form is remembered under its own name
        tables.in_match_form = _in_match_form(source, records, idents, keep)
    tables.resolved = len(records)
    return tables


def _constant_categorical(value: str, n: int) -> pd.Categorical:
    """pd.Categorical([value] * n) without a list of n strings (the empty one keeps no category, as that does)."""
    return pd.Categorical.from_codes(np.zeros(n, np.int8), categories=[value]) if n else pd.Categorical([])


def _in_match_form(source: SourceConfig, records: pd.DataFrame, idents: list[IdentifierColumn],
                   keep: np.ndarray) -> dict[tuple[str, str], pd.Series]:
    """The attributes ingest already put in match form, per record: an attribute read from one
    identifier column is that column normalized and blocked (for its normalizer's kind: email or
    phone); first and last names are the `_norm` columns (kind name)."""
    forms: dict[tuple[str, str], pd.Series] = {}
    for name, cols in source.attribute_columns().items():
        for ident in idents:
            if len(cols) == 1 and ident.column == cols[0] and ident.blocked and ident.normalizer in ("email", "phone"):
                codes = ident.codes[keep]
                # An Arrow take with null indices for missing values (no pandas concat and take).
                taken = pc.take(to_arrow(ident.normalized), pa.array(codes, mask=codes < 0))
                forms[(ident.normalizer, name)] = pd.Series(taken, dtype=ident.normalized.dtype)
    for name in ("first_name", "last_name"):
        if f"{name}_norm" in records:
            forms[("name", name)] = records[f"{name}_norm"].reset_index(drop=True)
    return forms


def _no_observations() -> pd.DataFrame:
    """The observations of a records source that maps no identifier: none (every record is then a
    node of its own, linked only by matching)."""
    return pd.DataFrame({
        "value": pd.Series([], dtype="str"), "record_pos": np.zeros(0, np.int64), "type": np.zeros(0, np.int16),
        "hash": np.zeros(0, np.uint64), "rule": np.zeros(0, np.int16), "explicit": np.zeros(0, bool),
        "is_key": np.zeros(0, bool),
    })


def _anchors(hashes: np.ndarray, usable_column: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per event, the first usable identifier (columns are sorted strongest first) and its column."""
    usable = (hashes != 0) & usable_column[None, :]
    has_any = usable.any(axis=1)
    column = np.where(has_any, usable.argmax(axis=1), -1)
    anchor = np.where(has_any, hashes[np.arange(len(hashes)), np.maximum(column, 0)], 0)
    return anchor.astype(np.uint64), column


def event_id_hashes(source: SourceConfig, keys: pd.Series) -> np.ndarray:
    codes, uniques = pd.factorize(keys)
    return spread(hash_identifiers(f"event:{source.name}", pd.Series(uniques, dtype="str")), codes, np.uint64(0))


def ingest_events(
    config: Config, source: SourceConfig, raw: SourceFrame, blocklist: Blocklist, vocab: Vocabulary,
    seen_event_ids: np.ndarray | None = None, memo: NormalizationMemo | None = None,
) -> SourceTables:
    """Collapse events into identifier nodes and edges. `seen_event_ids` (hashes of event ids
    taken from earlier files) makes redeliveries across files count as duplicates too."""
    tables = SourceTables(source.name, raw.rows_read, rejects=[raw.rejects])
    frame = raw.frame.reset_index(drop=True)
    bad = np.zeros(len(frame), bool)
    if source.key:
        key = frame[source.key]
        missing = key.isna().to_numpy()
        key_hash = event_id_hashes(source, key)
        duplicate = pd.Series(key_hash).duplicated(keep="first").to_numpy() & ~missing
        if seen_event_ids is not None and len(seen_event_ids):
            duplicate |= np.isin(key_hash, seen_event_ids) & ~missing
        tables.event_ids = sorted_unique(key_hash[~(missing | duplicate)])
        tables.rejects.append(_reject(frame, missing, source.name, source.key, "missing event id"))
        tables.rejects.append(_reject(frame, duplicate, source.name, source.key, "duplicate event id (redelivery)", key))
        bad = missing | duplicate
    types = config.identity.types
    idents = identifier_columns(config, source, frame, blocklist, tables.actions, memo)
    # Strongest first, so that an event's anchor is the strongest identifier it carries.
    idents.sort(key=lambda i: (types[i.id_type].priority, i.explicit))
    hashes = np.stack([i.hash for i in idents], axis=1) if idents else np.zeros((len(frame), 0), np.uint64)
    anchor_ok = np.array([types[i.id_type].evidence and not i.explicit for i in idents], dtype=bool)
    anchor, anchor_column = _anchors(hashes, anchor_ok)
    unusable = (anchor == 0) & ~bad
    tables.rejects.append(
        _reject(frame, unusable, source.name, None, "no usable identifier (all missing, invalid or blocked)")
    )
    keep = ~(bad | unusable)
    tables.events = tables.resolved = int(keep.sum())

    ts = _parse_times(frame[source.timestamp] if source.timestamp else None, len(frame))
    column_type = np.array([vocab.type_code(i.id_type) for i in idents], dtype=np.int16)
    column_priority = np.array([types[i.id_type].priority for i in idents], dtype=np.int64)
    node_parts, edge_parts = [], []
    for col, ident in enumerate(idents):
        present = keep & (ident.hash != 0)
        node_parts.append(
            pd.DataFrame({"hash": ident.hash[present], "type": column_type[col], "ts": ts[present],
                          "anchored": (anchor_column == col)[present]})
        )
        # A non-evidence value (e.g. IP) gets its edge too: the graph marks it observed and never
        # links through it, but it tells whose events carried the value (identifier_map, forget).
        rows = np.flatnonzero(present & (ident.hash != anchor))
        if not len(rows):
            continue
        # An edge ranks like its weaker end.
        anchor_cols = anchor_column[rows]
        weaker = np.where(column_priority[anchor_cols] > column_priority[col], column_type[anchor_cols], column_type[col])
        edge_parts.append(
            pd.DataFrame(
                {
                    "a": anchor[rows],
                    "b": ident.hash[rows],
                    "type": weaker.astype(np.int16),
                    "rule": np.int16(vocab.rule_code(ident.rule if ident.explicit else COOCCURRENCE_RULE)),
                    "ts": ts[rows],
                }
            )
        )
    nodes = collapse_nodes(node_parts)
    nodes["value"] = value_of(distinct_values(idents), nodes["hash"].to_numpy())
    edges = collapse_edges(edge_parts, nodes["hash"].to_numpy(np.uint64), vocab)
    tables.event_nodes, tables.event_edges = nodes, edges
    if config.stitching is not None and config.stitching.enabled and source.session:
        tables.sessions = event_sessions(config, source, frame, idents, keep, ts, vocab)
    return tables


def _session_field(frame: pd.DataFrame, name: str, columns: list[str]) -> pd.Series:
    if name == "screen" and len(columns) == 2:  # [width, height] -> "WxH"
        width, height = (normalize_trim(frame[c]) for c in columns)
        return (width + "x" + height).where(width.notna() & height.notna())
    return normalize_trim(_coalesce(frame, columns))


def event_sessions(config: Config, source: SourceConfig, frame: pd.DataFrame, idents: list[IdentifierColumn],
                   keep: np.ndarray, ts: np.ndarray, vocab: Vocabulary) -> pd.DataFrame:
    """The sessions of the anonymous ids this file's events carry (resolver/ingest/sessions.py): the
    per-event rows end here."""
    options = config.stitching
    anonymous = [i for i in idents if i.id_type in options.anonymous_types and not i.explicit]
    anon_hash = np.zeros(len(frame), dtype=np.uint64)
    anon_type = np.zeros(len(frame), dtype=np.int16)
    for ident in reversed(anonymous):  # the first column that holds one wins
        has = ident.hash != 0
        anon_hash[has] = ident.hash[has]
        anon_type[has] = vocab.type_code(ident.id_type)
    anon_hash[~keep] = 0
    fields = {name: _session_field(frame, name, _as_columns(columns)) for name, columns in source.session.items()}
    return sessionize(anon_hash, anon_type, ts, fields, options.session_gap_minutes, options.permutations)


def _as_columns(columns) -> list[str]:
    return [columns] if isinstance(columns, str) else list(columns)


NODE_COLUMNS = ["hash", "type", "events", "anchored", "first_seen", "last_seen"]
EDGE_COLUMNS = ["a", "b", "type", "rule", "explicit", "count", "first_seen"]
_EMPTY_DTYPES = {"hash": np.uint64, "explicit": bool, "first_seen": "datetime64[ns]", "last_seen": "datetime64[ns]"}


def collapse_nodes(parts: list[pd.DataFrame]) -> pd.DataFrame:
    """Distinct identifiers seen in events (sorted by hash), with counts and first/last seen."""
    parts = [p for p in parts if len(p)]
    if not parts:
        return pd.DataFrame({c: np.zeros(0, _EMPTY_DTYPES.get(c, np.int64)) for c in NODE_COLUMNS})
    frame = pd.concat(parts, ignore_index=True)
    groups = Groups.of(frame["hash"].to_numpy(np.uint64))
    ts = frame["ts"].to_numpy()
    return pd.DataFrame(
        {
            "hash": groups.keys,
            "type": groups.first(frame["type"].to_numpy()),
            "events": groups.sizes(),
            "anchored": groups.sum(frame["anchored"].to_numpy(np.int64)),
            "first_seen": groups.min_time(ts),
            "last_seen": groups.max_time(ts),
        }
    )


def collapse_edges(parts: list[pd.DataFrame], node_hashes: np.ndarray, vocab: Vocabulary) -> pd.DataFrame:
    """Distinct (anchor, identifier, rule) edges with how often and since when they were seen.

    Edge ends come back as rows of the (sorted) node table, so that whoever combines files maps
    each node once rather than each edge end.
    """
    parts = [p for p in parts if len(p)]
    if not parts:
        return pd.DataFrame({c: np.zeros(0, _EMPTY_DTYPES.get(c, np.int64)) for c in EDGE_COLUMNS})
    frame = pd.concat(parts, ignore_index=True)
    a = positions_in(node_hashes, frame["a"].to_numpy(np.uint64))
    b = positions_in(node_hashes, frame["b"].to_numpy(np.uint64))
    rule = frame["rule"].to_numpy(np.int64)
    n, n_rules = len(node_hashes), len(vocab.rules)
    groups = Groups.of((a * n + b) * n_rules + rule)
    rules = groups.first(rule)
    return pd.DataFrame(
        {
            "a": groups.first(a),
            "b": groups.first(b),
            "type": groups.first(frame["type"].to_numpy()),
            "rule": rules.astype(np.int16),
            "explicit": rules != vocab.rule_code(COOCCURRENCE_RULE),
            "count": groups.sizes(),
            "first_seen": groups.min_time(frame["ts"].to_numpy()),
        }
    )


def ingest_source(
    config: Config, source: SourceConfig, raw: SourceFrame, blocklist: Blocklist, vocab: Vocabulary,
    seen_event_ids: np.ndarray | None = None, memo: NormalizationMemo | None = None,
) -> SourceTables:
    """One source's rows as tables; values `memo` knows are not normalized again."""
    if source.kind == "records":
        return ingest_records(config, source, raw, blocklist, vocab, memo)
    return ingest_events(config, source, raw, blocklist, vocab, seen_event_ids, memo)
