"""From raw source rows to canonical tables: records, identifier observations, collapsed event edges.

Records keep one row each. Events do not survive this stage row by row: each event adds an edge
from its anchor identifier (the strongest one it carries) to each other identifier it carries,
and the edges are collapsed into distinct pairs with a count and first/last seen.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from resolver.config import Config, SourceConfig
from resolver.graph import ACTION_COLUMNS
from resolver.io.readers import REJECT_COLUMNS, SourceFrame
from resolver.normalize import Blocklist, hash_identifiers, normalize_identifier, normalize_name, normalize_trim

TRUTHY = {"true", "1", "yes", "y", "t"}


@dataclass
class SourceTables:
    """What one source contributes, in canonical form."""

    name: str
    rows_read: int
    records: pd.DataFrame | None = None  # kind == records
    observations: pd.DataFrame | None = None  # record_pos, id_type, hash, value, rule, explicit
    event_edges: pd.DataFrame | None = None  # kind == events: a, b, id_type, rule, explicit, count, first/last
    event_nodes: pd.DataFrame | None = None  # id_type, hash, value, events, first_seen, last_seen
    events: int = 0
    anchor_counts: pd.Series | None = None  # events per anchor identifier hash
    rejects: list[pd.DataFrame] = field(default_factory=list)
    actions: list[pd.DataFrame] = field(default_factory=list)


@dataclass
class IdentifierColumn:
    """One identifier type read from one or more columns, normalized, blocked and hashed."""

    id_type: str
    column: str
    value: pd.Series  # normalized value or NA
    hash: np.ndarray  # uint64, 0 where missing, invalid or blocked


def _reject(frame: pd.DataFrame, mask: np.ndarray, source: str, field: str | None, reason: str, raw) -> pd.DataFrame:
    picked = frame[mask]
    return pd.DataFrame(
        {
            "source": source,
            "file": picked["_file"].astype(str).to_numpy(),
            "row": picked["_row"].to_numpy(np.int64),
            "field": field if field else pd.NA,
            "reason": reason,
            "raw": pd.Series(raw, dtype="str")[mask].str.slice(0, 200).to_numpy() if raw is not None else pd.NA,
        },
        columns=REJECT_COLUMNS,
    )


def _value_actions(
    action: str, source: str, id_type: str, values: pd.Series, reasons: pd.Series
) -> pd.DataFrame:
    """One row per (value, reason) with how many rows carried it."""
    present = reasons.notna().to_numpy()
    if not present.any():
        return pd.DataFrame(columns=ACTION_COLUMNS)
    counted = (
        pd.DataFrame({"value": values[present].to_numpy(), "reason": reasons[present].to_numpy()})
        .value_counts(dropna=False)
        .reset_index(name="count")
    )
    counted.insert(0, "id_type", id_type)
    counted.insert(0, "source", source)
    counted.insert(0, "action", action)
    return counted[ACTION_COLUMNS]


def _coalesce(frame: pd.DataFrame, columns: list[str]) -> pd.Series:
    """First non-empty value across columns, row by row."""
    result = frame[columns[0]]
    for column in columns[1:]:
        result = result.fillna(frame[column])
    return result


def read_identifiers(
    config: Config, source: SourceConfig, frame: pd.DataFrame, blocklist: Blocklist, actions: list
) -> list[IdentifierColumn]:
    """Normalize, block and hash every identifier column (each column kept separately)."""
    out = []
    mapped = [(t, c, "identifier") for t, cols in source.identifier_columns().items() for c in cols]
    mapped += [(link.type, link.column, link.rule) for link in source.links]
    for id_type, column, _ in mapped:
        spec = config.identity.types[id_type]
        raw = frame[column]
        value, reason = normalize_identifier(
            spec.normalizer,
            raw,
            default_region=config.run.default_region,
            email_options=config.identity.email.model_dump(),
        )
        actions.append(_value_actions("invalid", source.name, id_type, raw.astype("str"), reason))
        blocked = blocklist.blocked(id_type, value)
        actions.append(_value_actions("blocked", source.name, id_type, value, blocked))
        value = value.mask(blocked.notna())
        out.append(IdentifierColumn(id_type, column, value, hash_identifiers(id_type, value)))
    return out


def _parse_times(values: pd.Series | None, n: int) -> pd.Series:
    if values is None:
        return pd.Series(pd.NaT, index=range(n), dtype="datetime64[ns, UTC]")
    parsed = pd.to_datetime(values, utc=True, errors="coerce", format="ISO8601")
    return parsed.dt.as_unit("ns").reset_index(drop=True)


def _duplicate_keys(keys: pd.Series) -> np.ndarray:
    return keys.duplicated(keep="first").to_numpy() & keys.notna().to_numpy()


def ingest_records(config: Config, source: SourceConfig, raw: SourceFrame, blocklist: Blocklist) -> SourceTables:
    tables = SourceTables(source.name, raw.rows_read, rejects=[raw.rejects])
    frame = raw.frame.reset_index(drop=True)
    key_raw = frame[source.key]
    missing = key_raw.isna().to_numpy()
    key_norm = normalize_trim(key_raw)
    idents_all = read_identifiers(config, source, frame, blocklist, tables.actions)
    # The record's own key, normalized like the identifier mapped to the same column (15 -> 18 chars).
    for ident in idents_all:
        if ident.column == source.key and ident.id_type in source.identifiers:
            key_norm = ident.value.fillna(key_norm)
            break
    duplicate = _duplicate_keys(key_norm) & ~missing
    bad = missing | duplicate
    tables.rejects.append(_reject(frame, missing, source.name, source.key, "missing record key", None))
    tables.rejects.append(
        _reject(frame, duplicate, source.name, source.key, "duplicate record key (earlier row kept)", key_raw)
    )
    keep = ~bad
    deleted = (
        frame[source.deleted].str.strip().str.lower().isin(TRUTHY).to_numpy()
        if source.deleted
        else np.zeros(len(frame), bool)
    )

    positions = np.flatnonzero(keep)
    records = pd.DataFrame(
        {
            "source": source.name,
            "record_key": key_raw[keep].to_numpy(),
            "source_key": key_norm[keep].to_numpy(),
            "trust": source.trust,
            "timestamp": _parse_times(frame[source.timestamp] if source.timestamp else None, len(frame))[keep].to_numpy(),
            "is_deleted": deleted[keep],
            "file": frame["_file"][keep].astype(str).to_numpy(),
            "row": frame["_row"][keep].to_numpy(np.int64),
        }
    )
    for name, cols in source.attribute_columns().items():
        records[name] = _coalesce(frame, cols)[keep].to_numpy()
    for name in ("first_name", "last_name"):
        if name in records:
            records[f"{name}_norm"] = normalize_name(records[name]).to_numpy()

    new_position = np.full(len(frame), -1, dtype=np.int64)
    new_position[positions] = np.arange(len(positions))
    link_columns = {(link.type, link.column): link.rule for link in source.links}
    observations = []
    for ident in idents_all:
        rule = link_columns.get((ident.id_type, ident.column), "identifier")
        explicit = rule != "identifier"
        has = (ident.hash != 0) & keep
        if not explicit:
            # A deleted record keeps only its own id (so that merges into it can be followed).
            has &= ~deleted | (ident.column == source.key)
        rows = np.flatnonzero(has)
        observations.append(
            pd.DataFrame(
                {
                    "record_pos": new_position[rows],
                    "id_type": ident.id_type,
                    "column": ident.column,
                    "hash": ident.hash[rows],
                    "value": ident.value.to_numpy()[rows],
                    "rule": rule,
                    "explicit": explicit,
                    "is_key": ident.column == source.key and not explicit,
                }
            )
        )
    obs = pd.concat(observations, ignore_index=True)
    # A deleted record that was not merged anywhere is out of the graph entirely.
    linked = np.zeros(len(records), bool)
    linked[obs.loc[obs["explicit"], "record_pos"].to_numpy()] = True
    orphan = records["is_deleted"].to_numpy() & ~linked
    obs = obs[~orphan[obs["record_pos"].to_numpy()]]
    tables.records = records
    tables.observations = obs.drop_duplicates(["record_pos", "hash", "rule"]).reset_index(drop=True)
    return tables


def _anchor(hashes: np.ndarray, evidence: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per event, the first non-missing evidence identifier (columns are in priority order)."""
    usable = (hashes != 0) & evidence[None, :]
    has_any = usable.any(axis=1)
    first = np.where(has_any, usable.argmax(axis=1), -1)
    anchor = np.where(has_any, hashes[np.arange(len(hashes)), np.maximum(first, 0)], 0)
    return anchor.astype(np.uint64), first


def ingest_events(config: Config, source: SourceConfig, raw: SourceFrame, blocklist: Blocklist) -> SourceTables:
    tables = SourceTables(source.name, raw.rows_read, rejects=[raw.rejects])
    frame = raw.frame.reset_index(drop=True)
    bad = np.zeros(len(frame), bool)
    if source.key:
        key = frame[source.key]
        missing = key.isna().to_numpy()
        duplicate = _duplicate_keys(key) & ~missing
        tables.rejects.append(_reject(frame, missing, source.name, source.key, "missing event id", None))
        tables.rejects.append(
            _reject(frame, duplicate, source.name, source.key, "duplicate event id (redelivery)", key)
        )
        bad = missing | duplicate
    times = _parse_times(frame[source.timestamp] if source.timestamp else None, len(frame))
    idents = read_identifiers(config, source, frame, blocklist, tables.actions)
    types = config.identity.types
    link_rules = {(link.type, link.column): link.rule for link in source.links}
    # Columns in priority order so that the anchor is the strongest identifier an event carries.
    idents.sort(key=lambda i: (types[i.id_type].priority, (i.id_type, i.column) in link_rules))
    hashes = np.stack([i.hash for i in idents], axis=1) if idents else np.zeros((len(frame), 0), np.uint64)
    is_link = np.array([(i.id_type, i.column) in link_rules for i in idents], dtype=bool)
    evidence = np.array([types[i.id_type].evidence for i in idents], dtype=bool) & ~is_link
    anchor, anchor_col = _anchor(hashes, evidence)
    unusable = (anchor == 0) & ~bad
    tables.rejects.append(
        _reject(frame, unusable, source.name, None, "no usable identifier (all missing, invalid or blocked)", None)
    )
    keep = ~(bad | unusable)
    tables.events = int(keep.sum())

    ts = times.to_numpy("datetime64[ns]")
    anchor_type = np.array([i.id_type for i in idents], dtype=object)
    priorities = np.array([types[i.id_type].priority for i in idents], dtype=np.int64)
    tables.anchor_counts = pd.Series(anchor[keep]).value_counts()
    edges, nodes = [], []
    for col, ident in enumerate(idents):
        present = keep & (ident.hash != 0)
        nodes.append(
            pd.DataFrame(
                {"id_type": ident.id_type, "hash": ident.hash[present], "value": ident.value.to_numpy()[present], "ts": ts[present]}
            )
        )
        pair = present & (ident.hash != anchor)
        rows = np.flatnonzero(pair)
        if not len(rows):
            continue
        rule = link_rules.get((ident.id_type, ident.column), "cooccurrence")
        # The edge ranks like its weaker end.
        a_cols = anchor_col[rows]
        weaker = np.where(
            priorities[a_cols] > types[ident.id_type].priority, anchor_type[a_cols], ident.id_type
        )
        edges.append(
            pd.DataFrame(
                {
                    "a": anchor[rows],
                    "b": ident.hash[rows],
                    "id_type": weaker,
                    "rule": rule,
                    "explicit": rule != "cooccurrence",
                    "ts": ts[rows],
                }
            )
        )
    tables.event_nodes = _collapse_nodes(nodes)
    tables.event_edges = _collapse_edges(edges)
    return tables


def _collapse_nodes(parts: list[pd.DataFrame]) -> pd.DataFrame:
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["id_type", "hash", "value", "ts"])
    grouped = frame.groupby("hash", sort=True)
    return pd.DataFrame(
        {
            "id_type": grouped["id_type"].first(),
            "value": grouped["value"].first(),
            "events": grouped.size(),
            "first_seen": grouped["ts"].min(),
            "last_seen": grouped["ts"].max(),
        }
    ).reset_index()


def _collapse_edges(parts: list[pd.DataFrame]) -> pd.DataFrame:
    columns = ["a", "b", "id_type", "rule", "explicit", "count", "first_seen", "last_seen"]
    if not parts:
        return pd.DataFrame(columns=columns)
    frame = pd.concat(parts, ignore_index=True)
    grouped = frame.groupby(["a", "b", "rule"], sort=True)
    out = grouped.agg(
        id_type=("id_type", "first"),
        explicit=("explicit", "first"),
        count=("ts", "size"),
        first_seen=("ts", "min"),
        last_seen=("ts", "max"),
    ).reset_index()
    return out[columns]


def ingest_source(config: Config, source: SourceConfig, raw: SourceFrame, blocklist: Blocklist) -> SourceTables:
    if source.kind == "records":
        return ingest_records(config, source, raw, blocklist)
    return ingest_events(config, source, raw, blocklist)
