"""Resolution of one event against the store (inside the worker's transaction, see worker.py).

A Salesforce change updates the stored record field by field (non-empty values only; a field
changes only when the event is at least as recent as the value it holds: out-of-order deliveries
cannot roll a field back), then maps the record through its configured source exactly as a batch
run does (same attribute and identifier columns, same normalizers, same blocklist). The person:

1. the person the record already belongs to, else the person of its strongest identifier
   (identity.types priority) found in the store; identifiers that belong to other persons are not
   merged in real time (a deterministic link must never bridge two people without the batch
   guards): the conflict goes to the review queue;
2. else a new (provisional) person at once, and the record joins the match queue: a moment
   later, batched with the other new records (match_pending, off the request path), the trained
   model (the state's model.json) scores it against the golden records of the persons that share
   a blocking key with it: at or above auto_merge (no veto, no guard refusing) the provisional
   person is merged into the best one, in the review band it becomes a review item;
3. a new person's id is the smallest member hash of what it holds (its record, keyed by the
   export source the next batch run reads it from, and its identifiers), formatted as the batch
   formats ids: the next batch run gives the same person the same id.

New identifiers join the person unless the type's limit is reached. Golden fields follow the
field's survivorship chain (source_priority, most_recent; rules that need every record, such as
most_frequent, count as ties) and otherwise the last-modified value wins; every change of a golden
field is logged (field, before, after, source, event id).

Segment messages carry identifiers (and attributes when the configured events source maps any):
they join the person of their strongest known identifier, or make a new (anonymous) person.

Erased people stay erased (as the batch suppresses them at ingest): an identifier whose salted
hash is a tombstone (the `suppressed` table: the state's tombstones, and what `resolver forget`
adds) is left out of the event, and a Salesforce record whose key or any identifier is one is not
stored at all; the event's stored payload is then blanked (`apply` reports it).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from resolver.config import Config, ConfigError, SourceConfig, field_kind, golden_fields
from resolver.graph.guards import UNLIMITED, limit_matrix
from resolver.ids import person_id, salted, to_signed
from resolver.ingest.tables import built_attribute
from resolver.matching.attributes import matching_columns, normalize_attribute
from resolver.matching.blocking import rule_keys
from resolver.matching.compare import comparison_matrix, prepare_all
from resolver.matching.match import vetoes
from resolver.matching.model import FSModel, match_weights, probabilities
from resolver.normalize import Blocklist, hash_identifiers, normalize_identifier
from resolver.persons.golden import (
    NORMALIZED_DISPLAY,
    UNKNOWN_TIME,
    most_recent_rank,
    source_priority_rank,
    source_ranks,
)
from resolver.sync.payloads import Event
from resolver.sync.store import Tx, as_arrays, insert_rows, now_iso, set_meta

OBJECT_ID_TYPES = {"Contact": ("sf_contact_id", "contact"), "Lead": ("sf_lead_id", "lead"),
                   "Account": ("sf_account_id", "account")}


class ResolveError(RuntimeError):
    """An event that cannot be resolved under this configuration (it goes to the dead-letter queue)."""


def _get(obj: dict, path: str):
    """A dotted path into a JSON object (`context.device.id`)."""
    for part in path.split("."):
        if not isinstance(obj, dict):
            return None
        obj = obj.get(part)
    return obj


def _field(obj: dict, column: str):
    """A Salesforce record's field by API name (records are flat)."""
    return obj.get(column)


def _text(value) -> str | None:
    if value is None or isinstance(value, (dict, list)):
        return None
    text = str(value) if not isinstance(value, bool) else ("true" if value else "false")
    return text if text.strip() else None


def _built(get, row: dict, spec) -> str | None:
    """A built attribute (a date from its parts, joined columns) of one record, as the batch builds
    it (resolver.ingest.tables.built_attribute); None when it makes no value."""
    value = built_attribute(spec, [pd.Series([_text(get(row, c))], dtype="str") for c in spec.columns]).iloc[0]
    return None if pd.isna(value) else str(value)


def sync_name(source: str) -> str:
    """The source name of what serve received for `source` (the export's source in the batch)."""
    return f"{source}_sync"


def with_sync_sources(config: Config) -> Config:
    """The config with each source's export source just before it (same trust), unless the config
    lists it already: what serve received is a newer version of the same records, so it ranks
    just above them in source_priority, in serve as in the batch run that reads the export."""
    names = {s.name for s in config.sources}
    sources = []
    for source in config.sources:
        if sync_name(source.name) not in names and not source.name.endswith("_sync"):
            sources.append(source.model_copy(update={"name": sync_name(source.name)}))
        sources.append(source)
    return config.model_copy(update={"sources": sources})


def _nanoseconds(timestamp: str | None) -> int:
    """A stored time (fixed-width UTC ISO text: store.iso) as int64 nanoseconds, as the batch
    ranks record times (UNKNOWN_TIME when there is none)."""
    if timestamp is None:
        return UNKNOWN_TIME
    return int(np.datetime64(timestamp.removesuffix("Z"), "ns").astype(np.int64))


class Known:
    """What a chunk of events reads from the store, fetched for all of its events at once (one
    statement per table: on PostgreSQL each read is a round trip, which cost more than the rest of
    an event) and kept current with what they write in the same transaction. Only for a
    transaction that is thrown away whole when anything fails (the worker's chunk without
    savepoints): a savepoint rolled back would leave it stale. A key it does not know is read
    from the store (and then known)."""

    def __init__(self):
        self.holders: dict[tuple[str, str], tuple[str, str | None] | None] = {}  # None: held by no one
        self.status: dict[str, str | None] = {}  # person -> status (None: no persons row), as the holders' join reads it
        self.counts: dict[tuple[str, str], int] = {}  # (person, type) -> how many it holds
        self.records: dict[tuple[str, str], tuple | None] = {}  # (source, key) -> (fields, person, deleted); None: none
        self.golden: dict[str, dict[str, tuple]] = {}  # person -> field -> (value, source, last_modified)
        # What its events write that nothing in the chunk reads: written at its end, one statement
        # per 500 rows (write_deferred), instead of one per row.
        self.log: list[tuple] = []  # change_log rows, in the order they were made
        self.resolved: list[tuple[str, str | None, bool]] = []  # (event id, person, carried erased values)

    def add_holders(self, identifiers, rows: list[tuple]) -> None:
        """The holders' statement's rows for `identifiers` (those without a row are held by no one)."""
        self.holders.update(dict.fromkeys(identifiers))
        for id_type, value, person, status in rows:
            self.holders[(id_type, value)] = (person, status)
            self.status[person] = status

    def attached(self, id_type: str, value: str, person: str) -> None:
        """An identifier was given to `person` in this transaction."""
        if person in self.status:
            self.holders[(id_type, value)] = (person, self.status[person])
        else:  # its status is not known here: read it again when asked
            self.holders.pop((id_type, value), None)
        if (person, id_type) in self.counts:
            self.counts[(person, id_type)] += 1


def _holder_rows(tx: Tx, identifiers: list) -> list[tuple]:
    """(type, value, person, person's status) of those of `identifiers` held by someone: one
    statement (from arrays: store.as_arrays), or one per 500 of them."""
    select = ("SELECT i.id_type, i.value, i.person_id, p.status FROM identifiers i "
              "LEFT JOIN persons p ON p.person_id = i.person_id ")
    if not identifiers:
        return []
    if as_arrays(tx, 2 * len(identifiers)):
        return tx.all(select + "WHERE (i.id_type, i.value) IN (SELECT * FROM unnest(?::text[], ?::text[]))",
                      [list(column) for column in zip(*identifiers)])
    rows = []
    for start in range(0, len(identifiers), 500):
        part = identifiers[start:start + 500]
        terms = " OR ".join(["(i.id_type = ? AND i.value = ?)"] * len(part))
        rows += tx.all(select + f"WHERE {terms}", [x for pair in part for x in pair])
    return rows


def _where_in(tx: Tx, sql: str, keys: list) -> list[tuple]:
    """`sql` for the rows whose column (or columns: `keys` of tuples) is one of `keys`, its `{keys}`
    standing for them: arrays (store.as_arrays), or VALUES, 500 keys at a time."""
    if not keys:
        return []
    width = len(keys[0]) if isinstance(keys[0], tuple) else 1
    if as_arrays(tx, len(keys) * width):
        columns = list(zip(*keys)) if width > 1 else [keys]
        return tx.all(sql.format(keys="SELECT * FROM unnest(" + ", ".join(["?::text[]"] * width) + ")"),
                      [list(column) for column in columns])
    group = "(" + ", ".join("?" * width) + ")"
    rows = []
    for start in range(0, len(keys), 500):
        part = keys[start:start + 500]
        rows += tx.all(sql.format(keys="VALUES " + ", ".join([group] * len(part))),
                       [x for key in part for x in key] if width > 1 else part)
    return rows


def insert_log(tx: Tx, rows: list[tuple]) -> None:
    """Change log rows, in order (their seq follows it)."""
    insert_rows(tx, "change_log", "event_id, person_id, field, before, after, source, at", rows)


class Resolver:
    def __init__(self, config: Config, model: dict | None, salt: str | None = None):
        self.config = config
        self.salt = salt  # the state's tombstone salt (erasure.salted); None: no state, nothing erased
        self.suppressed: set[int] = set()  # salted hashes (signed 64-bit, as stored) of erased values
        self._suppressed_version: str | None = None
        self._suppressed_hit = False  # set by apply() when the event carried an erased value
        self._known: Known | None = None  # set by apply(): what its chunk read already
        self._mapping: dict[tuple[str, bool], list[tuple[str, str]]] = {}  # see _mapped
        bl = config.identity.blocklist
        self.blocklist = Blocklist.from_config(bl.values, bl.patterns, bl.vendor_lists)
        self.types = config.identity.types
        # The batch guards' limits (graph.guards.limit_matrix), by type: what a person may hold when
        # an identifier of that type joins it (the type's own row), and when a probabilistic link
        # does (the last row, tightened by matching.link_limits). Guards off: none.
        names = list(self.types)
        limits = limit_matrix(config.identity, names,
                              config.matching.link_limits if config.matching is not None else {})
        self.attach_limits = {t: int(limits[i, i]) for i, t in enumerate(names) if limits[i, i] != UNLIMITED}
        self.link_limits = {t: int(cap) for t, cap in zip(names, limits[-1]) if cap != UNLIMITED}
        self.ranks = source_ranks(with_sync_sources(config))
        self.fields = golden_fields(config)
        # Memos (bounded: cleared past 500,000 entries): raw value -> normalized form, attribute
        # value -> (display, match form), (type or record kind, value) -> 64-bit member key.
        self._identifier_cache: dict[tuple[str, str], str | None] = {}
        self._attribute_cache: dict[tuple[str, str], object] = {}
        self._hash_cache: dict[tuple[str, str], int] = {}
        self.objects = self._object_sources(config)
        self.segment = self._segment_source(config)
        self._model = model if config.matching is not None else None
        self._matcher: Matcher | None = None

    @property
    def matcher(self) -> Matcher | None:
        """The model's scorer, prepared on first use (lookups never need it)."""
        if self._matcher is None and self._model is not None:
            self._matcher = Matcher(self.config, self._model, self)
        return self._matcher

    # -- configuration -------------------------------------------------------------------------
    @staticmethod
    def _object_sources(config: Config) -> dict[str, SourceConfig]:
        by_name = {s.name: s for s in config.sources}
        out = {}
        for obj, name in config.sync.objects.items():
            if name not in by_name or by_name[name].kind != "records":
                raise ConfigError(f"sync.objects.{obj}: {name!r} is not a records source")
            out[obj] = by_name[name]
        for source in config.sources:
            if source.system != "salesforce" or source.kind != "records":
                continue
            key_types = {t for t, cols in source.identifier_columns().items() if source.key in cols}
            for obj, (id_type, word) in OBJECT_ID_TYPES.items():
                if obj not in out and (id_type in key_types or word in source.name.lower()):
                    out[obj] = source
        return out

    @staticmethod
    def _segment_source(config: Config) -> SourceConfig | None:
        if config.sync.segment_source:
            return next(s for s in config.sources if s.name == config.sync.segment_source)
        return next((s for s in config.sources if s.system == "segment"), None)

    # -- normalization (the batch's functions, vectorized per group of events, remembered) ---------
    def _warm_identifiers(self, id_type: str, raws: list[str]) -> dict[str, str | None]:
        """Normalize (and remember) the values not seen yet; returns what it normalized."""
        todo = list(dict.fromkeys(r for r in raws if (id_type, r) not in self._identifier_cache))
        if not todo:
            return {}
        spec = self.types[id_type]
        normalized, _ = normalize_identifier(spec.normalizer, pd.Series(todo, dtype="str"),
                                             default_region=self.config.run.default_region,
                                             email_options=self.config.identity.email.model_dump())
        blocked = self.blocklist.blocked(id_type, normalized).notna().to_numpy()
        if len(self._identifier_cache) > 500_000:
            self._identifier_cache.clear()
        values = normalized.mask(blocked)
        hashes = hash_identifiers(id_type, values)
        if len(self._hash_cache) > 500_000:
            self._hash_cache.clear()
        done = {}
        for raw, value, h in zip(todo, values, hashes):
            kept = done[raw] = None if pd.isna(value) else str(value)
            self._identifier_cache[(id_type, raw)] = kept
            if kept is not None:
                self._hash_cache[(id_type, kept)] = int(h)
        return done

    def identifier(self, id_type: str, raw) -> str | None:
        """`raw` normalized as the batch normalizes identifiers of this type (None: missing,
        invalid or blocked)."""
        raw = _text(raw)
        if raw is None:
            return None
        try:
            return self._identifier_cache[(id_type, raw)]
        except KeyError:  # not seen yet (or the memo was cleared meanwhile, by another thread)
            return self._warm_identifiers(id_type, [raw]).get(raw, self._identifier_cache.get((id_type, raw)))

    def _warm_attributes(self, field: str, raws: list[str]) -> None:
        todo = list(dict.fromkeys(r for r in raws if (field, r) not in self._attribute_cache))
        if not todo:
            return
        kind = field_kind(self.config, field)
        matches = normalize_attribute(kind, pd.Series(todo, dtype="str"), self.config)
        if len(self._attribute_cache) > 500_000:
            self._attribute_cache.clear()
        for raw, match in zip(todo, matches):
            if pd.isna(match):
                out = (None, None)
            elif kind == "number":
                out = (f"{match:g}", f"{match:g}")
            elif kind in NORMALIZED_DISPLAY:
                out = (str(match), str(match))
            else:
                out = (raw.strip(), str(match))
            self._attribute_cache[(field, raw)] = out

    def attribute(self, field: str, raw) -> tuple[str | None, str | None]:
        """(display value, match form) of one golden field value, as the batch's golden records
        show and compare it."""
        raw = _text(raw)
        if raw is None:
            return None, None
        if (field, raw) not in self._attribute_cache:
            self._warm_attributes(field, [raw])
        return self._attribute_cache[(field, raw)]

    def prepare(self, events: list[Event]) -> None:
        """Vectorized work for a batch of events, before they are resolved one by one (and outside
        the write transaction): every identifier and attribute value they carry is normalized in
        one call per type and remembered."""
        identifiers: dict[str, list[str]] = {}
        attributes: dict[str, list[str]] = {}
        for event in events:
            if event.channel == "segment":
                source, rows, get = self.segment, [event.fields], _get
            else:
                source, get = self.objects.get(event.object or ""), _field
                rows = [event.fields]
                if source is not None:  # every record the event names (its key is an identifier too)
                    rows = [{**event.fields, source.key: event.fields.get(source.key) or record_id}
                            for record_id in event.record_ids or [None]]
            if source is None:
                continue
            mapped = self._mapped(source)
            for row in rows:
                for id_type, column in mapped:
                    if (text := _text(get(row, column))) is not None:
                        identifiers.setdefault(id_type, []).append(text)
            for name, cols in source.attribute_columns().items():
                attributes.setdefault(name, []).extend(t for c in cols if (t := _text(get(rows[0], c))) is not None)
            for name, spec in source.built_attributes().items():
                if (t := _built(get, rows[0], spec)) is not None:
                    attributes.setdefault(name, []).append(t)
        for id_type, raws in identifiers.items():
            if self.types[id_type].evidence:  # the others never link (and are not stored)
                self._warm_identifiers(id_type, raws)
        for name, raws in attributes.items():
            self._warm_attributes(name, raws)

    # -- erased values -----------------------------------------------------------------------------
    def refresh_suppressed(self, tx: Tx) -> None:
        """Reload the erased values' salted hashes when they changed (a cheap check per batch)."""
        row = tx.one("SELECT value FROM meta WHERE key = 'suppressed_version'")
        version = row[0] if row else None
        if version != self._suppressed_version:
            self.suppressed = {h for (h,) in tx.all("SELECT salted_hash FROM suppressed")}
            self._suppressed_version = version

    def _erased(self, key: int) -> bool:
        """Is this member key (an identifier's or a record's hash) erased?"""
        if not self.suppressed or self.salt is None:
            return False
        return to_signed(int(salted(np.array([key], dtype=np.uint64), self.salt)[0])) in self.suppressed

    def _record_member(self, source: SourceConfig, key: str) -> int:
        """A record's member key as the next batch run computes it: it reads what serve received
        from the export source (sync_name), so the record is keyed by that source's name."""
        return self._member(f"record:{sync_name(source.name)}", key)

    def _member(self, kind: str, value: str) -> int:
        if (kind, value) not in self._hash_cache:
            self._hash_cache[(kind, value)] = int(hash_identifiers(kind, pd.Series([value], dtype="str"))[0])
        return self._hash_cache[(kind, value)]

    def flush_index(self, tx: Tx) -> int:
        """Blocking keys of the persons whose golden record changed since the last flush (the
        change log says which), in one vectorized pass; returns how many persons. The service runs
        it once a second (the worker), off the request path; the change log makes it crash-safe."""
        if self.matcher is None:
            return 0
        row = tx.one("SELECT value FROM meta WHERE key = 'index_seq'")
        done = int(row[0]) if row else 0
        rows = tx.all("SELECT seq, person_id, field FROM change_log WHERE seq > ? ORDER BY seq", (done,))
        if not rows:
            return 0
        persons = sorted({p for _, p, f in rows if p and not f.startswith("_") and ":" not in f})
        if persons:
            golden = _golden_rows(tx, persons)
            keys = self.matcher.keys([golden[p] for p in persons])
            tx.executemany("DELETE FROM block_keys WHERE person_id = ?", [(p,) for p in persons])
            tx.executemany("INSERT INTO block_keys (rule, key, person_id) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                           [(r, to_signed(int(keys[r, i])), p) for r in range(keys.shape[0])
                            for i, p in enumerate(persons) if keys[r, i] != 0])
        set_meta(tx, "index_seq", str(rows[-1][0]))
        return len(persons)

    # -- a chunk's reads, at once ------------------------------------------------------------------
    def prefetch(self, tx: Tx, events: list[Event]) -> Known:
        """Read what resolving `events` (in this order, in this transaction) will read: the stored
        records they name, the holders of their identifiers, how many identifiers of each limited
        type those holders have, and the golden fields of the persons they may update."""
        known = Known()
        records = list(dict.fromkeys(key for event in events for key in self._record_keys(event)))
        known.records.update(dict.fromkeys(records))
        for source, key, fields, person, deleted in _where_in(
                tx, "SELECT source, record_key, fields, person_id, deleted FROM records "
                    "WHERE (source, record_key) IN ({keys})", records):
            known.records[(source, key)] = (fields, person, deleted)
        identifiers: dict[tuple[str, str], None] = {}
        golden_ids: dict[tuple[str, str], None] = {}
        for event in events:
            mine, golden = self._event_identifiers(event, known)
            identifiers.update(dict.fromkeys(mine))
            if golden:
                golden_ids.update(dict.fromkeys(mine))
        held = list(identifiers)
        known.add_holders(held, _holder_rows(tx, held))
        holders = sorted({h[0] for h in known.holders.values() if h is not None})
        limited = list(self.attach_limits)
        if holders and limited:
            known.counts.update(dict.fromkeys([(p, t) for p in holders for t in limited], 0))
            for person, id_type, n in _where_in(tx, "SELECT person_id, id_type, COUNT(*) FROM identifiers "
                                                    "WHERE person_id IN ({keys}) GROUP BY person_id, id_type", holders):
                known.counts[(person, id_type)] = n
        persons = {row[1] for row in known.records.values() if row is not None and row[1] is not None}
        persons |= {known.holders[i][0] for i in golden_ids if known.holders.get(i) is not None}
        persons = sorted(persons)
        known.golden.update((p, {}) for p in persons)
        for person, field, value, source, ts in _where_in(
                tx, "SELECT person_id, field, value, source, last_modified FROM golden WHERE person_id IN ({keys})",
                persons):
            known.golden[person][field] = (value, source, ts)
        return known

    def _record_keys(self, event: Event) -> list[tuple[str, str]]:
        """(source, record key) of the stored records a Salesforce event reads."""
        source = self.objects.get(event.object or "") if event.channel != "segment" else None
        if source is None:
            return []
        try:
            return [(source.name, self._record_key(source, r)) for r in event.record_ids if not r.endswith("*")]
        except Exception:  # noqa: BLE001 - its own resolution fails (dead-lettered), not the chunk's reads
            return []

    def _event_identifiers(self, event: Event, known: Known) -> tuple[list[tuple[str, str]], bool]:
        """The identifiers an event will most likely look up (a Salesforce record's: of its stored
        fields as `known` has them, with the event's), and whether it may update golden fields."""
        try:
            if event.channel == "segment":
                source = self.segment
                if source is None:
                    return [], False
                return (self._identifiers(source, event.fields, getter=_get),
                        bool(source.attribute_columns() or source.built_attributes()))
            source = self.objects.get(event.object or "")
            if source is None:
                return [], False
            found = []
            for record_id in event.record_ids:
                if record_id.endswith("*"):
                    continue
                row = known.records.get((source.name, self._record_key(source, record_id)))
                flat = {api: held[0] for api, held in json.loads(row[0]).items()} if row else {}
                flat.update((api, value) for api, value in event.fields.items() if _text(value) is not None)
                flat.setdefault(source.key, record_id)
                found += self._identifiers(source, flat)
            return found, True
        except Exception:  # noqa: BLE001 - its own resolution fails (dead-lettered), not the chunk's reads
            return [], False

    # -- events ----------------------------------------------------------------------------------
    def apply(self, tx: Tx, event: Event, received_at: str, seq: int = 0,
              known: Known | None = None) -> tuple[str | None, bool]:
        """Resolve one event (`seq`: its position in the events table); returns the person it
        ended with (None: nothing to resolve) and whether it carried erased values (left out).
        `known`: what prefetch() read for its chunk (see Known)."""
        self._suppressed_hit = False
        self._known = known
        try:
            if event.channel == "segment":
                return self._segment_event(tx, event, received_at), self._suppressed_hit
            source = self.objects.get(event.object or "")
            if source is None:
                raise ResolveError(f"no records source in the configuration maps Salesforce object {event.object!r} "
                                   "(sync.objects)")
            person = None
            for record_id in event.record_ids:
                person = self._salesforce_record(tx, event, source, record_id, received_at, seq) or person
            return person, self._suppressed_hit
        finally:
            self._known = None  # it holds for its transaction only

    def _record_key(self, source: SourceConfig, raw: str) -> str:
        key_types = [t for t, cols in source.identifier_columns().items() if source.key in cols]
        if key_types:
            value = self.identifier(key_types[0], raw)
            if value is not None:
                return value
        return raw.strip()

    def _salesforce_record(self, tx: Tx, event: Event, source: SourceConfig, record_id: str, received_at: str,
                           seq: int):
        ts = event.timestamp or received_at
        if record_id.endswith("*"):  # a wildcard (gap overflow): every record of the object must be refetched
            self._log(tx, event, None, "_refetch", None, record_id, source.name, received_at)
            return None
        key = self._record_key(source, record_id)
        if self.suppressed and (self._erased(self._record_member(source, key))
                                or self._erased(self._member(f"record:{source.name}", key))):
            self._suppressed_hit = True  # an erased record is never stored again (batch or export key)
            return None
        row = self._stored_record(tx, source.name, key)
        stored = json.loads(row[0]) if row else {}
        person = row[1] if row else None
        if event.change.startswith("GAP_"):
            self._upsert_record(tx, source, key, event.object, person, stored, ts, deleted=bool(row and row[2]),
                                refetch=1, seq=seq)
            self._log(tx, event, person, "_refetch", None, key, source.name, received_at)
            return person
        if event.change in ("DELETE", "UNDELETE"):
            deleted = event.change == "DELETE"
            self._upsert_record(tx, source, key, event.object, person, stored, ts, deleted=deleted, refetch=0, seq=seq)
            self._log(tx, event, person, "_deleted", str(bool(row and row[2])).lower(), str(deleted).lower(),
                      source.name, received_at)
            return person
        for api, value in event.fields.items():
            if _text(value) is None:
                continue  # only non-empty values update a record
            held = stored.get(api)
            if held is None or held[1] is None or ts >= held[1]:
                stored[api] = [value, ts]
        flat = {api: held[0] for api, held in stored.items()}
        flat.setdefault(source.key, record_id)
        field_ts = {api: held[1] for api, held in stored.items()}
        identifiers = self._identifiers(source, flat)
        if self.suppressed and any(self._erased(self._hash(t, v)) for t, v in identifiers):
            self._suppressed_hit = True  # a record holding an erased identifier is dropped, as the batch drops it
            return None
        attributes = self._attributes(source, flat, field_ts)
        holders = self._holders(tx, identifiers)
        if person is None:
            person = self._deterministic(tx, event, identifiers, holders, received_at)
        score = person is None and self.matcher is not None and bool(attributes)
        if person is None:
            members = [self._record_member(source, key)]
            person = self._new_person(tx, members + [self._hash(t, v) for t, v in identifiers], received_at)
        self._attach(tx, event, person, identifiers, holders, received_at, source.name)
        self._golden(tx, event, person, attributes, sync_name(source.name), key, received_at)
        self._upsert_record(tx, source, key, event.object, person, stored, ts, deleted=bool(row and row[2]),
                            refetch=0, seq=seq)
        if score:  # the model's step, batched with the other new records a moment later (match_pending)
            tx.execute("INSERT INTO match_queue (event_id, source, record_key, person_id, attributes, created_at) "
                       "VALUES (?, ?, ?, ?, ?, ?)", (event.event_id, source.name, key, person,
                                                     json.dumps({f: v[0] for f, v in attributes.items()}), received_at))
        return person

    def _segment_event(self, tx: Tx, event: Event, received_at: str) -> str | None:
        source = self.segment
        if source is None:
            raise ResolveError("no segment events source in the configuration (sync.segment_source)")
        message = event.fields
        identifiers = self._identifiers(source, message, getter=_get)
        kept = [(t, v) for t, v in identifiers if not (self.suppressed and self._erased(self._hash(t, v)))]
        if len(kept) < len(identifiers):  # erased identifiers are left out (with the links they carry)
            self._suppressed_hit = True
            identifiers = kept
        if not identifiers:
            return None
        holders = self._holders(tx, identifiers)
        person = self._deterministic(tx, event, identifiers, holders, received_at)
        if person is None:
            person = self._new_person(tx, [self._hash(t, v) for t, v in identifiers], received_at)
        self._attach(tx, event, person, identifiers, holders, received_at, source.name)
        ts = event.timestamp or received_at
        attributes = self._attributes(source, message, {}, getter=_get, default_ts=ts)
        if attributes:
            self._golden(tx, event, person, attributes, sync_name(source.name), None, received_at)
        return person

    # -- mapping -----------------------------------------------------------------------------------
    def _mapped(self, source: SourceConfig, evidence: bool = False) -> list[tuple[str, str]]:
        """(identifier type, column) of a source's identifiers and links (`evidence`: only the
        types that link), worked out once per source (it is asked for every event)."""
        key = (source.name, evidence)
        if key not in self._mapping:
            mapped = [(t, c) for t, cols in source.identifier_columns().items() for c in cols]
            mapped += [(link.type, link.column) for link in source.links]
            self._mapping[key] = [(t, c) for t, c in mapped if not evidence or self.types[t].evidence]
        return self._mapping[key]

    def _identifiers(self, source: SourceConfig, row: dict, getter=None) -> list[tuple[str, str]]:
        get = getter or _field
        found: dict[tuple[str, str], None] = {}
        for id_type, column in self._mapped(source, evidence=True):
            value = self.identifier(id_type, get(row, column))
            if value is not None:
                found[(id_type, value)] = None
        # strongest first (identity.types priority), as the batch anchors events
        return sorted(found, key=lambda tv: (self.types[tv[0]].priority, tv[0], tv[1]))

    def _attributes(self, source: SourceConfig, row: dict, field_ts: dict, getter=None, default_ts=None) -> dict:
        """field -> (display, match form, timestamp) of the source's attributes (first non-empty column)."""
        get = getter or _field
        out = {}
        for name, cols in source.attribute_columns().items():
            for col in cols:
                display, match = self.attribute(name, get(row, col))
                if display is not None:
                    out[name] = (display, match, field_ts.get(col, default_ts))
                    break
        for name, spec in source.built_attributes().items():
            display, match = self.attribute(name, _built(get, row, spec))
            if display is not None:
                out[name] = (display, match, max((field_ts.get(c, default_ts) for c in spec.columns),
                                                 key=lambda t: t or ""))
        return out

    def _hash(self, id_type: str, value: str) -> int:
        """The identifier's 64-bit hash (the batch's member key of it)."""
        return self._member(id_type, value)

    # -- steps -------------------------------------------------------------------------------------
    def _holders(self, tx: Tx, identifiers) -> dict[tuple[str, str], tuple[str, str | None]]:
        """(type, value) -> (the person holding it, that person's status), for those held: one
        statement for all of an event's identifiers not known from its chunk's reads (a round
        trip each would cost more than the lookups on PostgreSQL)."""
        known = self._known
        if known is None:
            return {(t, v): (person, status) for t, v, person, status in _holder_rows(tx, list(identifiers))}
        missing = [i for i in identifiers if i not in known.holders]
        if missing:
            known.add_holders(missing, _holder_rows(tx, missing))
        return {i: known.holders[i] for i in identifiers if known.holders[i] is not None}

    def _stored_record(self, tx: Tx, source: str, key: str) -> tuple | None:
        """(fields, person, deleted) of a stored record (None: not stored)."""
        known = self._known
        if known is not None and (source, key) in known.records:
            return known.records[(source, key)]
        row = tx.one("SELECT fields, person_id, deleted FROM records WHERE source = ? AND record_key = ?",
                     (source, key))
        if known is not None:
            known.records[(source, key)] = row
        return row

    def _held_count(self, tx: Tx, person: str, id_type: str) -> int:
        """How many identifiers of `id_type` the person holds."""
        known = self._known
        if known is not None and (person, id_type) in known.counts:
            return known.counts[(person, id_type)]
        n = tx.one("SELECT COUNT(*) FROM identifiers WHERE person_id = ? AND id_type = ?", (person, id_type))[0]
        if known is not None:
            known.counts[(person, id_type)] = n
        return n

    def _current_golden(self, tx: Tx, person: str) -> dict[str, tuple]:
        """field -> (value, source, last_modified) of the person's golden fields (a copy)."""
        known = self._known
        if known is not None and person in known.golden:
            return dict(known.golden[person])
        current = {f: (v, s, t) for f, v, s, t in tx.all(
            "SELECT field, value, source, last_modified FROM golden WHERE person_id = ?", (person,))}
        if known is not None:
            known.golden[person] = dict(current)
        return current

    def _deterministic(self, tx: Tx, event: Event, identifiers, holders: dict, received_at: str) -> str | None:
        persons = []
        for id_type, value in identifiers:
            person, status = holders.get((id_type, value), (None, None))
            if status == "active" and person not in persons:
                persons.append(person)
        reason = "identifiers of one event belong to several persons: not merged in real time"
        for other in persons[1:]:  # one review item per pair of persons, however many events show it
            if tx.one("SELECT 1 FROM review_queue WHERE person_id = ? AND candidate_id = ? AND reason = ?",
                      (persons[0], other, reason)) is None:
                tx.execute("INSERT INTO review_queue (event_id, record_key, person_id, candidate_id, probability, reason,"
                           " created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                           (event.event_id, None, persons[0], other, None, reason, received_at))
        return persons[0] if persons else None

    def _guard(self, tx: Tx, person: str, identifiers) -> str | None:
        """The type whose limit a fuzzy link to `person` would break (identity limits and
        matching.link_limits), as the batch's guarded pass refuses it; None when the link is allowed."""
        for id_type, limit in self.link_limits.items():
            mine = {v for t, v in identifiers if t == id_type}
            if not mine:
                continue
            held = {v for (v,) in tx.all("SELECT value FROM identifiers WHERE person_id = ? AND id_type = ?",
                                         (person, id_type))}
            if len(held | mine) > limit:
                return id_type
        return None

    def finish(self, tx: Tx) -> None:
        """After a transaction of the CLI (dlq replay): the pending model step and the key index."""
        self.match_pending(tx)
        self.flush_index(tx)

    def match_pending(self, tx: Tx, limit: int = 500) -> int:
        """The probabilistic step for new records no identifier tied to anyone, all at once: the
        model scores each against the golden records of the persons sharing a blocking key with
        it. At or above auto_merge (no must-agree veto, no guard refusing) its provisional person
        is merged into the best candidate; in the review band it becomes a review item; else it
        stays its own person. Runs once a second (the worker), off the request path; returns how many."""
        if self.matcher is None:
            return 0
        rows = tx.all("SELECT seq, event_id, record_key, person_id, attributes FROM match_queue ORDER BY seq LIMIT ?",
                      (limit,))
        if not rows:
            return 0
        results = self.matcher.best_many(tx, [json.loads(r[4]) for r in rows], exclude=[r[3] for r in rows])
        thresholds = self.config.matching.thresholds
        at = now_iso()
        for (_, event_id, key, provisional, _), best in zip(rows, results):
            if best is None or not self._active(tx, provisional):
                continue
            person, probability, vetoed = best
            if not self._active(tx, person):
                continue
            held = tx.all("SELECT id_type, value FROM identifiers WHERE person_id = ?", (provisional,))
            refused = self._guard(tx, person, held) if probability >= thresholds.auto_merge else None
            if probability >= thresholds.auto_merge and not vetoed and refused is None:
                self._merge(tx, provisional, person, probability, event_id, at)
            elif probability >= thresholds.review:
                reason = "review band" if probability < thresholds.auto_merge else "a must-agree comparison disagrees"
                if refused is not None:
                    reason = f"guard: would give one person more {refused} values than allowed"
                tx.execute("INSERT INTO review_queue (event_id, record_key, person_id, candidate_id, probability, reason,"
                           " created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                           (event_id, key, provisional, person, float(probability), reason, at))
        tx.execute("DELETE FROM match_queue WHERE seq <= ?", (rows[-1][0],))
        return len(rows)

    @staticmethod
    def _active(tx: Tx, person: str) -> bool:
        row = tx.one("SELECT status FROM persons WHERE person_id = ?", (person,))
        return row is not None and row[0] == "active"

    def _merge(self, tx: Tx, provisional: str, person: str, probability: float, event_id: str, at: str) -> None:
        """The provisional person joins `person`: identifiers, records and events move, golden
        fields follow survivorship, the provisional id is retired (status merged)."""
        event = Event(event_id=event_id, channel="model", change="MATCH", timestamp=None)
        self._log(tx, event, person, "_match", provisional, f"{probability:.4f}", "probabilistic", at)
        for table in ("identifiers", "records", "events"):
            tx.execute(f"UPDATE {table} SET person_id = ? WHERE person_id = ?", (person, provisional))
        current = {f: (v, s, t) for f, v, s, t in tx.all(
            "SELECT field, value, source, last_modified FROM golden WHERE person_id = ?", (person,))}
        for field, value, source, key, ts, origin in tx.all(
                "SELECT field, value, source, record_key, last_modified, event_id FROM golden WHERE person_id = ?",
                (provisional,)):
            held = current.get(field)
            if held is not None and held[0] is not None and not self._wins(field, source, ts or at, held):
                continue
            tx.execute("INSERT INTO golden (person_id, field, value, source, record_key, last_modified, event_id) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (person_id, field) DO UPDATE SET value = excluded.value, "
                       "source = excluded.source, record_key = excluded.record_key, "
                       "last_modified = excluded.last_modified, event_id = excluded.event_id",
                       (person, field, value, source, key, ts, origin))
            if held is None or held[0] != value:
                self._log(tx, event, person, field, held[0] if held else None, value, source, at)
        tx.execute("DELETE FROM golden WHERE person_id = ?", (provisional,))
        tx.execute("DELETE FROM block_keys WHERE person_id = ?", (provisional,))
        tx.execute("UPDATE persons SET status = 'merged' WHERE person_id = ?", (provisional,))
        self._log(tx, event, provisional, "_merged_into", provisional, person, "probabilistic", at)

    def _new_person(self, tx: Tx, members: list[int], received_at: str) -> str:
        key = min(members)
        attempt = 0
        while True:
            person = person_id(key)
            if tx.one("INSERT INTO persons (person_id, origin, created_at, status) VALUES (?, 'serve', ?, 'active') "
                      "ON CONFLICT (person_id) DO NOTHING RETURNING person_id", (person, received_at)) is not None:
                if self._known is not None:
                    self._known.status[person] = "active"
                return person
            attempt += 1  # an id issued before is never given to anyone else
            key = int(hash_identifiers("person-retry", pd.Series([f"{min(members)}:{attempt}"], dtype="str"))[0])

    def _attach(self, tx: Tx, event: Event, person: str, identifiers, holders: dict, received_at: str,
                source: str) -> None:
        for id_type, value in identifiers:
            if (id_type, value) in holders:
                continue  # held already (by this person, or by another: see the review queue)
            limit = self.attach_limits.get(id_type)
            if limit is not None:
                held = self._held_count(tx, person, id_type)
                if held >= limit:
                    self._log(tx, event, person, f"identifier:{id_type}", None, "refused: limit reached", source,
                              received_at)
                    continue
            tx.execute("INSERT INTO identifiers (id_type, value, person_id, origin) VALUES (?, ?, ?, 'serve')",
                       (id_type, value, person))
            if self._known is not None:
                self._known.attached(id_type, value, person)
            self._log(tx, event, person, f"identifier:{id_type}", None, value, source, received_at)

    def _golden(self, tx: Tx, event: Event, person: str, attributes: dict, source: str, record_key: str | None,
                received_at: str) -> None:
        current = self._current_golden(tx, person)
        for field, (display, match, ts) in attributes.items():
            ts = ts or received_at
            held = current.get(field)
            if held is not None and held[0] is not None and not self._wins(field, source, ts, held):
                continue
            before = held[0] if held else None
            same = before is not None and self.attribute(field, before)[1] == match
            if same and held[2] is not None and held[2] >= ts:
                continue
            tx.execute("INSERT INTO golden (person_id, field, value, source, record_key, last_modified, event_id) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (person_id, field) DO UPDATE SET value = excluded.value, "
                       "source = excluded.source, record_key = excluded.record_key, "
                       "last_modified = excluded.last_modified, event_id = excluded.event_id",
                       (person, field, display, source, record_key, ts, event.event_id))
            if self._known is not None and person in self._known.golden:
                self._known.golden[person][field] = (display, source, ts)
            if not same:
                self._log(tx, event, person, field, before, display, source, received_at)

    def _wins(self, field: str, source: str, ts: str, held: tuple) -> bool:
        """Does the event's value replace the held one under the field's survivorship chain? Each
        rule ranks the two values with the batch's rank key (persons/golden.py); the rules that rank
        a value by the person's other records (most_frequent, first_non_null), and longest, tie."""
        _, held_source, held_ts = held
        for rule in self.config.golden.chain(field):
            if rule == "source_priority":
                unknown = len(self.ranks)
                mine = source_priority_rank(self.ranks.get(source, unknown))
                theirs = source_priority_rank(self.ranks.get(held_source, unknown))
            elif rule == "most_recent":
                mine, theirs = most_recent_rank(_nanoseconds(ts)), most_recent_rank(_nanoseconds(held_ts))
            else:
                continue
            if mine != theirs:
                return bool(mine < theirs)
        return held_ts is None or ts >= held_ts  # no rule decides: the last-modified value wins

    def _upsert_record(self, tx: Tx, source: SourceConfig, key: str, obj, person, fields: dict, ts: str,
                       deleted: bool, refetch: int, seq: int) -> None:
        last = max([held[1] for held in fields.values() if held[1]] + [ts])
        tx.execute("INSERT INTO records (source, record_key, object, person_id, fields, last_modified, deleted, refetch,"
                   " updated_seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (source, record_key) DO UPDATE SET "
                   "object = excluded.object, person_id = excluded.person_id, fields = excluded.fields, "
                   "last_modified = excluded.last_modified, deleted = excluded.deleted, refetch = excluded.refetch, "
                   "updated_seq = excluded.updated_seq",
                   (source.name, key, obj, person, json.dumps(fields, sort_keys=True), last, int(deleted), refetch, seq))
        if self._known is not None:
            self._known.records[(source.name, key)] = (json.dumps(fields, sort_keys=True), person, int(deleted))

    def _log(self, tx: Tx, event: Event, person, field: str, before, after, source: str, at: str) -> None:
        row = (event.event_id, person, field, before, after, source, at)
        if self._known is not None:  # with its chunk's other rows (write_deferred)
            self._known.log.append(row)
        else:
            insert_log(tx, [row])


class Matcher:
    """The batch model scoring one record against the golden records of block-sharing persons."""

    def __init__(self, config: Config, model: dict, resolver: Resolver | None = None):
        self.config = config
        self.resolver = resolver  # its memo of match forms saves normalizing a value twice
        self.rules = config.matching.blocking.rules
        self.columns = matching_columns(config)
        self.cap = config.matching.blocking.max_block_size
        prepared = prepare_all(config.matching.comparisons, self._attributes([{}]))
        self.model = FSModel.from_dict(model, prepared, [r.name for r in self.rules], "the state's model.json")

    def _attributes(self, rows: list[dict]) -> dict[str, pd.Series]:
        """Each matching column in match form (the batch's normalize_attribute, per distinct value)."""
        out = {}
        for c in self.columns:
            raws = [_text(row.get(c)) for row in rows]
            kind = self.config.matching.normalizer(c)
            if self.resolver is None or kind == "number":
                out[c] = normalize_attribute(kind, pd.Series(raws, dtype="str"), self.config)
                continue
            self.resolver._warm_attributes(c, [r for r in raws if r is not None])
            out[c] = pd.Series([None if r is None else self.resolver._attribute_cache[(c, r)][1] for r in raws],
                               dtype="str")
        return out

    def keys(self, rows: list[dict]) -> np.ndarray:
        """(n_rules, n_rows) uint64 block keys (0 = no key)."""
        attributes = self._attributes(rows)
        return np.array([rule_keys(rule.keys, attributes, len(rows))[0] for rule in self.rules],
                        dtype=np.uint64).reshape(len(self.rules), len(rows))

    def best_many(self, tx: Tx, records: list[dict], exclude: list[str | None] | None = None
                  ) -> list[tuple[str, float, bool] | None]:
        """Per record: (best candidate person, probability, vetoed) among the persons whose golden
        record shares a blocking key with it (None: no candidate). Candidates and comparisons are
        made for all records at once."""
        keys = self.keys(records)
        blocks: dict[tuple[int, int], list[str]] = {}
        found: list[dict[str, int]] = []
        for i in range(len(records)):
            mine: dict[str, int] = {}
            for r in range(keys.shape[0]):
                k = int(keys[r, i])
                if k == 0:
                    continue
                if (r, k) not in blocks:
                    rows = tx.all("SELECT person_id FROM block_keys WHERE rule = ? AND key = ? LIMIT ?",
                                  (r, to_signed(k), self.cap + 1))
                    blocks[(r, k)] = [p for (p,) in rows] if len(rows) <= self.cap else []  # over the cap: skipped
                for person in blocks[(r, k)]:
                    if exclude is None or person != exclude[i]:
                        mine.setdefault(person, r)
            found.append(mine)
        persons = sorted({p for mine in found for p in mine})
        if not persons:
            return [None] * len(records)
        golden = _golden_rows(tx, persons)
        position = {p: len(records) + j for j, p in enumerate(persons)}
        prepared = prepare_all(self.config.matching.comparisons,
                               self._attributes(records + [golden[p] for p in persons]))
        left = np.array([i for i, mine in enumerate(found) for _ in mine], dtype=np.int64)
        right = np.array([position[p] for mine in found for p in mine], dtype=np.int64)
        rule = np.array([r for mine in found for r in mine.values()], dtype=np.int64)
        levels = comparison_matrix(prepared, left, right)
        probability = probabilities(match_weights(self.model, levels, rule))
        vetoed = vetoes(prepared, levels) >= 0
        out: list = [None] * len(records)
        start = 0
        for i, mine in enumerate(found):
            if mine:
                j = start + int(np.argmax(probability[start:start + len(mine)]))
                out[i] = (persons[right[j] - len(records)], float(probability[j]), bool(vetoed[j]))
            start += len(mine)
        return out


def _golden_rows(tx: Tx, persons: list[str]) -> dict[str, dict]:
    golden: dict[str, dict] = {p: {} for p in persons}
    for start in range(0, len(persons), 500):
        chunk = persons[start:start + 500]
        marks = ", ".join("?" * len(chunk))
        for person, field, value in tx.all(f"SELECT person_id, field, value FROM golden WHERE person_id IN ({marks})",
                                           chunk):
            golden[person][field] = value
    return golden
