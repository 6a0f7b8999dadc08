"""Erasure on request (GDPR / CCPA): what `resolver forget` (resolver/forget.py) erases, and the
suppression of erased people when their data is ingested again.

`forget` resolves a selector (an email, a phone, a person id or a record key) to the persons it
belongs to and removes their records, identifiers, golden records, conflicts and review items from
every output table, and their members from the state; the state's caches keyed by unsalted hashes
of raw values (the normalization memo, pairs, blocking keys, source snapshots) are dropped whole.
What remains is salted 64-bit hashes (keyed with the state's own salt, so they cannot be matched
against another system's hashes, and never the value itself): a tombstone per erased record and
identifier, and the erased persons' keys (status forgotten); plus an audit entry with what kind
of selector was used, when, and how much was removed (no PII).

A later run with the same state drops, right after reading, every record whose key or any
identifier matches a tombstone (an observed value's tombstone, e.g. an IP's, drops only the value),
and every event identifier that does; the summary counts them as suppressed rows, and the parts
they were dropped from hand no memo lookups on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from resolver.config import Config
from resolver.ids import record_member_keys, remix_key, salted
from resolver.normalize import hash_identifiers, normalize_identifier

SELECTORS = ("email", "phone", "person", "record")
OBSERVED_KIND = "observed"  # tombstone of a non-evidence value (an IP): suppressed as a value, never a record


class ErasureError(ValueError):
    """A forget request that cannot be carried out (no outputs, no state)."""


def normalized_identifier(config: Config, kind: str, value: str) -> str | None:
    """`value` as the `kind` normalizer (email or phone) stores it; None when it is invalid."""
    normalized, _ = normalize_identifier(kind, pd.Series([value], dtype="str"), default_region=config.run.default_region,
                                         email_options=config.identity.email.model_dump())
    return None if pd.isna(normalized.iloc[0]) else str(normalized.iloc[0])


def identifier_hashes(config: Config, kind: str, value: str) -> dict[str, int]:
    """Identifier type -> hash of `value` normalized as that type, for every type whose normalizer
    is `kind` (email or phone)."""
    normalized = normalized_identifier(config, kind, value)
    if normalized is None:
        return {}
    return {name: int(hash_identifiers(name, pd.Series([normalized], dtype="str"))[0])
            for name, spec in config.identity.types.items() if spec.normalizer == kind}


# ---------------------------------------------------------------------------------------------
# Suppression at ingest
# ---------------------------------------------------------------------------------------------
@dataclass
class Suppressed:
    records: int = 0
    identifier_values: int = 0
    events: int = 0
    values: set = field(default_factory=set)  # their texts: kept out of the policy actions

    def as_dict(self) -> dict:
        return {"records": self.records, "identifier_values": self.identifier_values, "event_observations": self.events}


def without_rows(actions: pd.DataFrame, flags: pd.DataFrame) -> pd.DataFrame:
    """A part's policy actions less the rows of `flags` (dropped records' flagged values): each
    action's count goes down by the rows it counted there, and an action left with none goes."""
    if not len(actions) or not len(flags):
        return actions
    keys = ["action", "id_type", "value", "reason"]
    dropped = flags[keys].astype("str").value_counts(sort=False).rename("dropped").reset_index()
    joined = actions[keys].astype("str").merge(dropped, on=keys, how="left")
    count = actions["count"].to_numpy(np.int64) - joined["dropped"].fillna(0).to_numpy(np.int64)
    return actions.assign(count=count)[count > 0].reset_index(drop=True)


def suppress(parts: list, tombstones: pd.DataFrame, salt: str) -> Suppressed:
    """Drop, in place, what matches a tombstone: records (their key or any evidence identifier
    they hold, with their rows of the policy actions), observed values of records, and event
    identifier values (with the links they carry)."""
    counts = Suppressed()
    if not len(tombstones):
        return counts
    observed = (tombstones["kind"].astype("str") == OBSERVED_KIND).to_numpy()
    dead = np.unique(tombstones["salted_hash"].to_numpy(np.uint64))
    evidence = np.unique(tombstones["salted_hash"].to_numpy(np.uint64)[~observed])

    def hit(keys: np.ndarray, among: np.ndarray = dead) -> np.ndarray:
        return np.isin(salted(keys, salt), among)

    for part in parts:
        if part.records is not None and len(part.records):
            records, obs = part.records, part.observations
            gone = hit(record_member_keys(records))
            obs_hit = hit(obs["hash"].to_numpy(np.uint64))
            # An erased non-evidence value (an IP) goes from the record; the record stays.
            value_only = obs_hit & ~hit(obs["hash"].to_numpy(np.uint64), evidence)
            if value_only.any():
                part.observations = obs = obs[~value_only].reset_index(drop=True)
                part.snapshot, part.erased = None, True
                counts.identifier_values += int(value_only.sum())
                obs_hit = obs_hit[~value_only]
            gone[obs["record_pos"].to_numpy()[obs_hit]] = True
            if gone.any():
                dropped = records[gone]
                counts.values |= set(dropped["source_key"].dropna().astype(str)) | set(dropped["record_key"].dropna().astype(str))
                attribute_columns = [c for c in dropped.columns if dropped[c].dtype == "str" and c not in ("source",)]
                counts.values |= set(dropped[attribute_columns].stack().dropna().astype(str))
                counts.values |= set(obs.loc[gone[obs["record_pos"].to_numpy()], "value"].dropna().astype(str))
                if part.flagged is not None:  # the actions counted their rows: those counts go
                    flags = part.flagged[gone[part.flagged["record_pos"].to_numpy()]]
                    part.actions = [without_rows(a, flags) for a in part.actions]
                part.drop_records(gone)
                part.snapshot, part.erased = None, True  # ingested (and suppressed) again each run
                n = int(gone.sum())
                part.resolved -= n
                part.suppressed += n
                counts.records += n
        if part.event_nodes is not None and len(part.event_nodes):
            nodes, edges = part.event_nodes, part.event_edges
            gone = hit(nodes["hash"].to_numpy(np.uint64))
            if gone.any():
                counts.values |= set(nodes.loc[gone, "value"].dropna().astype(str))
                keep = ~gone
                new_row = np.cumsum(keep) - 1
                a, b = edges["a"].to_numpy(), edges["b"].to_numpy()
                kept_edges = keep[a] & keep[b]
                part.event_edges = edges[kept_edges].assign(a=new_row[a[kept_edges]], b=new_row[b[kept_edges]])
                part.event_edges = part.event_edges.reset_index(drop=True)
                part.event_nodes = nodes[keep].reset_index(drop=True)
                if part.sessions is not None:  # the erased anonymous ids' sessions go with them
                    part.sessions = part.sessions[~hit(part.sessions["anon_hash"].to_numpy(np.uint64))]
                    part.sessions = part.sessions.reset_index(drop=True)
                part.snapshot, part.erased = None, True
                counts.identifier_values += int(gone.sum())
                counts.events += int(nodes["events"].to_numpy()[gone].sum())
    if counts.values:  # ingest's policy actions name values: the suppressed ones go
        for part in parts:
            part.actions = [a[~holds_value(a["value"], counts.values)] if len(a) else a for a in part.actions]
    return counts


# ---------------------------------------------------------------------------------------------
# forget
# ---------------------------------------------------------------------------------------------
@dataclass
class Erasure:
    persons: set
    record_ids: np.ndarray  # record_id of erased records (outputs' numbering)
    identifier_hashes: np.ndarray  # uint64 hashes of erased identifier values
    values: set  # the erased texts (emails, phones, record keys), to scan free-text columns
    observed: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))  # of identifier_hashes: non-evidence
    former: set = field(default_factory=set)  # ids of earlier persons keyed by an erased value (lineage)


def select_erasure(kind: str, value: str, outputs: dict[str, pd.DataFrame], config: Config) -> Erasure:
    identity, identifiers = outputs["identity_map"], outputs["identifier_map"]
    persons: set = set()
    hashes = np.zeros(0, dtype=np.uint64)
    records = np.zeros(0, dtype=np.int64)
    if kind in ("email", "phone"):
        hashes = np.array(list(identifier_hashes(config, kind, value).values()), dtype=np.uint64)
        rows = identifiers["hash"].to_numpy(np.uint64)
        persons |= set(identifiers.loc[np.isin(rows, hashes), "person_id"].dropna().astype(str))
    elif kind == "person":
        persons.add(value)
    elif kind == "record":
        hit = (identity["record_key"].astype(str) == value) | (identity["source_key"].astype(str) == value)
        records = identity.loc[hit, "record_id"].to_numpy(np.int64)
        persons |= set(identity.loc[hit, "person_id"].dropna().astype(str))
    else:
        raise ErasureError(f"unknown selector {kind!r} (expected one of {', '.join(SELECTORS)})")
    in_person = identity["person_id"].astype(str).isin(persons).to_numpy()
    records = np.union1d(records, identity.loc[in_person, "record_id"].to_numpy(np.int64))
    id_rows = identifiers["person_id"].astype(str).isin(persons).to_numpy() | np.isin(identifiers["hash"].to_numpy(np.uint64), hashes)
    hashes = np.union1d(hashes, identifiers.loc[id_rows, "hash"].to_numpy(np.uint64))
    picked = identity["record_id"].isin(records)
    values = {value} | set(identifiers.loc[id_rows, "value"].dropna().astype(str))
    if kind in ("email", "phone"):  # as stores keep it (serve's may hold a person no output shows)
        values.add(normalized_identifier(config, kind, value) or "")
    values |= set(identity.loc[picked, "record_key"].astype(str)) | set(identity.loc[picked, "source_key"].astype(str))
    observed = identifiers.loc[id_rows & (identifiers["status"].astype("str") == "observed").to_numpy(), "hash"]
    return Erasure(persons, records, hashes, {v for v in values if v}, observed=observed.to_numpy(np.uint64))


def _mentions(frame: pd.DataFrame, columns: list[str], values: set) -> np.ndarray:
    """Rows where any of the text columns contains any erased value."""
    out = np.zeros(len(frame), dtype=bool)
    if not values:
        return out
    pattern = "|".join(re.escape(v) for v in sorted(values))
    for column in columns:
        if column in frame:
            out |= frame[column].astype("str").str.contains(pattern, regex=True).fillna(False).to_numpy(bool)
    return out


def holds_value(column: pd.Series, values: set) -> np.ndarray:
    """Where a text column is one of the erased values (case and surrounding spaces ignored)."""
    wanted = {v.strip().lower() for v in values if v and v.strip()}
    return column.astype("str").str.strip().str.lower().isin(wanted).to_numpy(bool)


def erase_rows(name: str, frame: pd.DataFrame, e: Erasure) -> np.ndarray:
    """Which rows of an output table belong to the erased persons (True = remove)."""
    drop = np.zeros(len(frame), dtype=bool)
    for column in ("person_id", "person_id_l", "person_id_r", "master_person_id", "duplicate_person_id"):
        if column in frame:
            drop |= frame[column].astype("str").isin(e.persons).to_numpy()
    if name == "merge_candidates":  # Salesforce ids of the erased records
        for column in ("MasterRecordId", "DuplicateRecordId"):
            drop |= holds_value(frame[column], e.values)
    for column in ("record_id", "record_id_l", "record_id_r"):
        if column in frame and name != "lineage":
            drop |= frame[column].isin(e.record_ids).to_numpy()
    if name == "identifier_map":
        drop |= np.isin(frame["hash"].to_numpy(np.uint64), e.identifier_hashes)
    if name == "lineage":
        for column in ("person_id", "other_id"):
            drop |= frame[column].astype("str").isin(e.persons | e.former).to_numpy()
    if name in ("policy_actions", "rejects", "identifier_map", "conflicts"):
        drop |= _mentions(frame, ["value", "raw"], e.values)
    return drop


REMIX_ATTEMPTS = 4  # ids.remix_key's attempts checked: a clash is rare, a second one rarer still


def key_derived(persons: pd.DataFrame, member_keys: np.ndarray) -> np.ndarray:
    """Per row of the state's person table: whether its key was made from one of `member_keys`
    (a person key is its smallest member key, remixed when it clashes with one issued before)."""
    member_keys = np.asarray(member_keys, dtype=np.uint64)
    made = [member_keys] + [remix_key(member_keys, attempt) for attempt in range(1, REMIX_ATTEMPTS + 1)]
    return np.isin(persons["person_key"].to_numpy(np.uint64), np.concatenate(made))


def forget_person_keys(persons: pd.DataFrame, keys: np.ndarray, salt: str) -> pd.DataFrame:
    """The state's person table with `keys` forgotten. Each stays as a row (status forgotten) but
    under its salted key, and a row merged into one points to that: an unsalted key is the hash of
    an erased value, the salted one cannot be matched against anything outside this state."""
    person_keys = persons["person_key"].to_numpy(np.uint64)
    merged_into = persons["merged_into"].to_numpy(np.uint64)
    hit = np.isin(person_keys, keys)
    out = persons.assign(person_key=np.where(hit, salted(person_keys, salt), person_keys),
                         merged_into=np.where(np.isin(merged_into, keys), salted(merged_into, salt), merged_into))
    out.loc[hit, "status"] = "forgotten"
    return out.sort_values("person_key", kind="stable").reset_index(drop=True)
