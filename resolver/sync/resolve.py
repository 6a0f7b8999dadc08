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
   export source the next batch run reads it from, and its identifiers), formatted by the batch's
   function (ids.person_id): the next batch run gives the same person the same id.

New identifiers join the person unless the type's limit is reached (the batch guards' limits:
graph.guards.limit_matrix). Golden fields follow the field's survivorship chain, ranked by the
batch's rank keys (persons/golden.py: source_priority, most_recent, longest; the rules that rank a
value by the person's other records, most_frequent and first_non_null, count as ties) and otherwise the last-modified
value wins; every change of a golden field is logged (field, before, after, source, event id).

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

from resolver.config import Config, SourceConfig, golden_fields
from resolver.graph.guards import UNLIMITED, limit_matrix
from resolver.ids import person_id, remix_key, salted, to_signed
from resolver.persons.golden import (
    UNKNOWN_TIME,
    longest_rank,
    most_recent_rank,
    source_priority_rank,
    source_ranks,
)
from resolver.sync.mapping import Mapping, path_value, sync_name, value_text, with_sync_sources
from resolver.sync.matcher import Matcher
from resolver.sync.payloads import Event
from resolver.sync.queries import Known, golden_rows, holder_rows, insert_log, where_in
from resolver.sync.store import Tx, now_iso, set_meta


class ResolveError(RuntimeError):
    """An event that cannot be resolved under this configuration (it goes to the dead-letter queue)."""


def _nanoseconds(timestamp: str | None) -> int:
    """A stored time (fixed-width UTC ISO text: store.iso) as int64 nanoseconds, as the batch
    ranks record times (UNKNOWN_TIME when there is none)."""
    if timestamp is None:
        return UNKNOWN_TIME
    return int(np.datetime64(timestamp.removesuffix("Z"), "ns").astype(np.int64))


class Resolver:
    """The resolution steps (the policy above), over one store transaction at a time: an event's
    values come mapped from `mapping` (sync/mapping.py), the batch's rules are called (survivorship
    rank keys, guard limits, person ids, the model through `matcher`), the reads not made per step
    come from `queries` (sync/queries.py)."""

    def __init__(self, config: Config, model: dict | None, salt: str | None = None):
        self.config = config
        self.salt = salt  # the state's tombstone salt (ids.salted); None: no state, nothing erased
        self.suppressed: set[int] = set()  # salted hashes (signed 64-bit, as stored) of erased values
        self._suppressed_version: str | None = None
        self._suppressed_hit = False  # set by apply() when the event carried an erased value
        self._known: Known | None = None  # set by apply(): what its chunk read already
        self.mapping = Mapping(config)
        self.types = config.identity.types
        self.objects, self.segment = self.mapping.objects, self.mapping.segment
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
        self._model = model if config.matching is not None else None
        self._matcher: Matcher | None = None

    @property
    def matcher(self) -> Matcher | None:
        """The model's scorer, prepared on first use (lookups never need it)."""
        if self._matcher is None and self._model is not None:
            self._matcher = Matcher(self.config, self._model, self.mapping)
        return self._matcher

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
            golden = golden_rows(tx, persons)
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
        for source, key, fields, person, deleted in where_in(
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
        known.add_holders(held, holder_rows(tx, held))
        holders = sorted({h[0] for h in known.holders.values() if h is not None})
        limited = list(self.attach_limits)
        if holders and limited:
            known.counts.update(dict.fromkeys([(p, t) for p in holders for t in limited], 0))
            for person, id_type, n in where_in(tx, "SELECT person_id, id_type, COUNT(*) FROM identifiers "
                                                    "WHERE person_id IN ({keys}) GROUP BY person_id, id_type", holders):
                known.counts[(person, id_type)] = n
        persons = {row[1] for row in known.records.values() if row is not None and row[1] is not None}
        persons |= {known.holders[i][0] for i in golden_ids if known.holders.get(i) is not None}
        persons = sorted(persons)
        known.golden.update((p, {}) for p in persons)
        for person, field, value, source, ts in where_in(
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
            return [(source.name, self.mapping.record_key(source, r)) for r in event.record_ids if not r.endswith("*")]
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
                return (self.mapping.identifiers(source, event.fields, getter=path_value),
                        bool(source.attribute_columns() or source.built_attributes()))
            source = self.objects.get(event.object or "")
            if source is None:
                return [], False
            found = []
            for record_id in event.record_ids:
                if record_id.endswith("*"):
                    continue
                row = known.records.get((source.name, self.mapping.record_key(source, record_id)))
                flat = {api: held[0] for api, held in json.loads(row[0]).items()} if row else {}
                flat.update((api, value) for api, value in event.fields.items() if value_text(value) is not None)
                flat.setdefault(source.key, record_id)
                found += self.mapping.identifiers(source, flat)
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

    def _salesforce_record(self, tx: Tx, event: Event, source: SourceConfig, record_id: str, received_at: str,
                           seq: int):
        ts = event.timestamp or received_at
        if record_id.endswith("*"):  # a wildcard (gap overflow): every record of the object must be refetched
            self._log(tx, event, None, "_refetch", None, record_id, source.name, received_at)
            return None
        key = self.mapping.record_key(source, record_id)
        if self.suppressed and (self._erased(self.mapping.record_member(source, key))
                                or self._erased(self.mapping.member(f"record:{source.name}", key))):
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
            if value_text(value) is None:
                continue  # only non-empty values update a record
            held = stored.get(api)
            if held is None or held[1] is None or ts >= held[1]:
                stored[api] = [value, ts]
        flat = {api: held[0] for api, held in stored.items()}
        flat.setdefault(source.key, record_id)
        field_ts = {api: held[1] for api, held in stored.items()}
        identifiers = self.mapping.identifiers(source, flat)
        if self.suppressed and any(self._erased(self.mapping.identifier_hash(t, v)) for t, v in identifiers):
            self._suppressed_hit = True  # a record holding an erased identifier is dropped, as the batch drops it
            return None
        attributes = self.mapping.attributes(source, flat, field_ts)
        holders = self._holders(tx, identifiers)
        if person is None:
            person = self._deterministic(tx, event, identifiers, holders, received_at)
        score = person is None and self.matcher is not None and bool(attributes)
        if person is None:
            members = [self.mapping.record_member(source, key)]
            person = self._new_person(tx, members + [self.mapping.identifier_hash(t, v) for t, v in identifiers], received_at)
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
        identifiers = self.mapping.identifiers(source, message, getter=path_value)
        kept = [(t, v) for t, v in identifiers if not (self.suppressed and self._erased(self.mapping.identifier_hash(t, v)))]
        if len(kept) < len(identifiers):  # erased identifiers are left out (with the links they carry)
            self._suppressed_hit = True
            identifiers = kept
        if not identifiers:
            return None
        holders = self._holders(tx, identifiers)
        person = self._deterministic(tx, event, identifiers, holders, received_at)
        if person is None:
            person = self._new_person(tx, [self.mapping.identifier_hash(t, v) for t, v in identifiers], received_at)
        self._attach(tx, event, person, identifiers, holders, received_at, source.name)
        ts = event.timestamp or received_at
        attributes = self.mapping.attributes(source, message, {}, getter=path_value, default_ts=ts)
        if attributes:
            self._golden(tx, event, person, attributes, sync_name(source.name), None, received_at)
        return person

    # -- steps -------------------------------------------------------------------------------------
    def _holders(self, tx: Tx, identifiers) -> dict[tuple[str, str], tuple[str, str | None]]:
        """(type, value) -> (the person holding it, that person's status), for those held: one
        statement for all of an event's identifiers not known from its chunk's reads (a round
        trip each would cost more than the lookups on PostgreSQL)."""
        known = self._known
        if known is None:
            return {(t, v): (person, status) for t, v, person, status in holder_rows(tx, list(identifiers))}
        missing = [i for i in identifiers if i not in known.holders]
        if missing:
            known.add_holders(missing, holder_rows(tx, missing))
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
            if held is not None and held[0] is not None and not self._wins(field, value, source, ts or at, held):
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
        """A new active person, keyed by its smallest member key; on a clash with an id issued
        before, the key is remixed as the batch remixes it (ids.remix_key)."""
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
            key = int(remix_key(np.array([min(members)], dtype=np.uint64), attempt)[0])

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
            if held is not None and held[0] is not None and not self._wins(field, display, source, ts, held):
                continue
            before = held[0] if held else None
            same = before is not None and self.mapping.attribute(field, before)[1] == match
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

    def _wins(self, field: str, value: str, source: str, ts: str, held: tuple) -> bool:
        """Does the event's value (its display form) replace the held one under the field's
        survivorship chain? Each rule ranks the two values with the batch's rank key
        (persons/golden.py); the rules that rank a value by the person's other records
        (most_frequent, first_non_null) tie."""
        held_value, held_source, held_ts = held
        for rule in self.config.golden.chain(field):
            if rule == "source_priority":
                unknown = len(self.ranks)
                mine = source_priority_rank(self.ranks.get(source, unknown))
                theirs = source_priority_rank(self.ranks.get(held_source, unknown))
            elif rule == "most_recent":
                mine, theirs = most_recent_rank(_nanoseconds(ts)), most_recent_rank(_nanoseconds(held_ts))
            elif rule == "longest":
                mine, theirs = longest_rank(len(value or "")), longest_rank(len(held_value or ""))
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
