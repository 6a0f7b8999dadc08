"""The sync service's operations, independent of HTTP: accept events (durably, exactly once),
resolve them (the worker, off the request path: worker.py), retry failures from the dead-letter
queue, answer profile lookups, start from the latest batch state, and export what it received for
the next batch run.

Fast start (like cli.py): this module, app.py and worker.py import only light modules at their
top, so that `resolver serve` answers within about a second; the resolution machinery (resolve,
batch, forget and the state, which load numba, the matching stages and the hashing kernels) is
imported where it is first used.
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import re
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from resolver.config import Config
from resolver.sync.payloads import Event
from resolver.sync.queries import insert_log
from resolver.sync.store import Store, StoreError, Tx, as_arrays, default_store_url, insert_rows, iso, now_iso

log = logging.getLogger("resolver.sync")


def store_url(config: Config, state_dir: Path | None, url: str | None = None) -> str:
    return url or config.sync.store or default_store_url(state_dir)


class SyncService:
    def __init__(self, config: Config, state_dir: Path | None, url: str | None = None, import_batch: bool = True):
        self.config = config
        self.state_dir = Path(state_dir) if state_dir is not None else None
        self.store = Store(store_url(config, self.state_dir, url))
        self.inbox = Store(self.store.url, inbox=True)  # what requests append to (store.py)
        # The resolver (the state's model, normalization) is built on first use: accepting events
        # and /healthz need none of it, so a restarted service answers before it is loaded.
        self._resolver = None
        self._resolver_lock = threading.Lock()
        self.store.finish = self._finish
        # Set while a worker drains the inbox: reads then first wait until it has resolved every
        # event accepted before them (read-your-writes, at most `read_wait` seconds, once the
        # worker has started: at most `start_wait` seconds for that).
        self.resolving = False
        self.read_wait = 1.0
        self.start_wait = 10.0
        self.worker_ready = None  # set with the worker: has it started taking in events?
        self.worker_position = None  # set with the worker: the inbox position it has committed
        self.nudge = None  # set with the worker: wakes it when a read is waiting for the inbox
        if import_batch and self.state_dir is not None and _batch_pending(self.store, self.state_dir):
            from resolver.sync.batch import import_batch as load

            summary = load(self.store, config, self.state_dir, self.resolver)
            if summary:
                log.info("imported batch version %s: %d persons, %d identifiers", summary["version"],
                         summary["persons"], summary["identifiers"])

    @property
    def resolver(self):
        if self._resolver is None:
            with self._resolver_lock:
                if self._resolver is None:
                    self._resolver = self._load_resolver()
        return self._resolver

    def _load_resolver(self):
        from resolver.state.store import StateStore
        from resolver.sync.resolve import Resolver

        state = StateStore(self.state_dir).load() if self.state_dir is not None else None
        return Resolver(self.config, state.model if state is not None else None,
                        salt=state.salt if state is not None else None)

    def _finish(self, tx: Tx) -> None:
        self.resolver.finish(tx)

    def close(self) -> None:
        self.inbox.close()
        self.store.close()

    # -- accepting -------------------------------------------------------------------------------
    def accept(self, events: list[Event]) -> concurrent.futures.Future:
        """Append `events` to the inbox in the inbox writer's next transaction (group commit); the
        future gives {"accepted", "duplicates", "failed"} once that transaction is committed, i.e.
        once the events are durable. Resolution follows off the request path (the worker); an
        event that then fails goes to the dead-letter queue, so "failed" counts only events that
        could not be stored (none: a failed commit fails the whole request)."""
        return self.inbox.submit(lambda tx: self._accept(tx, events))

    @staticmethod
    def _accept(tx: Tx, events: list[Event]) -> dict:
        counts = {"accepted": 0, "duplicates": 0, "failed": 0}
        received = now_iso()
        rows = []
        for event in events:
            event_id, payload = _storable(event)
            rows.append((event_id, event.channel, received, payload))
        fresh = {e for (e,) in insert_rows(tx, "inbox", "event_id, channel, received_at, payload", rows,
                                            "ON CONFLICT (event_id) DO NOTHING RETURNING event_id")}
        for event_id, *_ in rows:  # an id twice in one request: its second copy is a duplicate
            counts["accepted" if event_id in fresh else "duplicates"] += 1
            fresh.discard(event_id)
        return counts

    @staticmethod
    def record_events(tx: Tx, rows: list[tuple[str, str, str, str, Event | None]]) -> dict[str, int]:
        """Record events of the inbox, (id, channel, received, payload, event or None when its
        payload was erased), in one statement; {id: seq} of those the store did not have yet."""
        from resolver.sync.forget import ERASED_PAYLOAD

        return dict(insert_rows(tx, "events", "event_id, channel, received_at, payload, status",
                                [(event_id, channel, received, payload if event is not None else ERASED_PAYLOAD,
                                  "accepted" if event is not None else "resolved")
                                 for event_id, channel, received, payload, event in rows],
                                "ON CONFLICT (event_id) DO NOTHING RETURNING event_id, seq"))

    def resolve_accepted(self, tx: Tx, event_id: str, channel: str, received: str, payload: str,
                         event: Event | None) -> bool:
        """Record and resolve one event of the inbox (the worker, in its transaction; `event` is
        None when its payload was erased meanwhile), in a savepoint of its own (a failure is
        dead-lettered); False when the store had it already."""
        from resolver.sync.forget import ERASED_PAYLOAD

        row = tx.one("INSERT INTO events (event_id, channel, received_at, payload, status) VALUES (?, ?, ?, ?, ?) "
                     "ON CONFLICT (event_id) DO NOTHING RETURNING seq",
                     (event_id, channel, received, payload if event is not None else ERASED_PAYLOAD,
                      "accepted" if event is not None else "resolved"))
        if row is None or event is None:
            return row is not None
        error = self._resolve(tx, event, received, row[0])
        if error is not None:
            self._dead_letter(tx, event_id, channel, payload, received, 1, error)
        return True

    def _resolve(self, tx: Tx, event: Event, received: str, seq: int = 0) -> str | None:
        """Resolve one event in a savepoint; None, or the error (its changes rolled back)."""
        try:
            with tx.savepoint():
                self.apply_event(tx, event, received, seq)
            return None
        except Exception as exc:  # noqa: BLE001 - any failure of one event goes to the dead-letter queue
            log.warning("event %s failed: %s", event.event_id, type(exc).__name__)
            return reason(exc)

    def apply_event(self, tx: Tx, event: Event, received: str, seq: int, known=None) -> None:
        """Resolve one recorded event (`seq`: its row in `events`) and mark it resolved (`known`:
        what its chunk read already, queries.Known)."""
        from resolver.sync.forget import ERASED_PAYLOAD

        person, suppressed = self.resolver.apply(tx, event, received, seq, known)
        if known is not None:  # marked with its chunk's other events (write_deferred)
            known.resolved.append((event.event_id, person, suppressed))
            return
        if suppressed:  # it carried an erased value: resolved without it, and not kept
            tx.execute("UPDATE events SET status = 'resolved', person_id = ?, error = NULL, payload = ? "
                       "WHERE event_id = ?", (person, ERASED_PAYLOAD, event.event_id))
        else:
            tx.execute("UPDATE events SET status = 'resolved', person_id = ?, error = NULL "
                       "WHERE event_id = ?", (person, event.event_id))

    @staticmethod
    def write_deferred(tx: Tx, known) -> None:
        """What a chunk's events left to its end (queries.Known): their change log rows, then
        their events marked resolved (those that carried erased values: payload blanked), one
        statement per 500 rows."""
        from resolver.sync.forget import ERASED_PAYLOAD
        insert_log(tx, known.log)
        known.log = []
        for erased in (False, True):
            rows = [(event_id, person) for event_id, person, suppressed in known.resolved if suppressed == erased]
            blank = ", payload = ?" if erased else ""
            if as_arrays(tx, 2 * len(rows)):
                tx.execute(f"UPDATE events SET status = 'resolved', person_id = v.p, error = NULL{blank} "
                           "FROM unnest(?::text[], ?::text[]) AS v(e, p) WHERE events.event_id = v.e",
                           [ERASED_PAYLOAD] * erased + [list(column) for column in zip(*rows)])
                continue
            for start in range(0, len(rows), 200):
                part = rows[start:start + 200]
                tx.execute(f"UPDATE events SET status = 'resolved', person_id = v.column2, error = NULL{blank} "
                           f"FROM (VALUES {', '.join(['(?, ?)'] * len(part))}) AS v WHERE events.event_id = v.column1",
                           [ERASED_PAYLOAD] * erased + [x for row in part for x in row])
        known.resolved = []

    def inbox_position(self) -> tuple[int, int]:
        """(the last event accepted into the inbox, the last one the resolver has taken in)."""
        accepted = self.inbox.read(lambda tx: tx.one("SELECT MAX(seq) FROM inbox"))
        return (accepted[0] or 0) if accepted else 0, self.resolved_position()

    def resolved_position(self) -> int:
        row = self.store.read(lambda tx: tx.one("SELECT value FROM meta WHERE key = 'inbox_seq'"))
        return int(row[0]) if row else 0

    def backlog(self) -> bool:
        """Are accepted events still waiting for the resolver?"""
        accepted, resolved = self.inbox_position()
        return accepted > resolved

    def lag(self) -> dict:
        """How far the worker is behind: the events accepted and not taken in yet, and when the
        oldest of them was received (None: none waits)."""
        position = self.resolved_position()
        depth, oldest = self.inbox.read(lambda tx: tx.one(
            "SELECT COUNT(*), MIN(received_at) FROM inbox WHERE seq > ?", (position,)))
        return {"queue_depth": depth, "oldest_unresolved_at": oldest}

    def wait_resolved(self, timeout: float | None = None) -> bool:
        """Wait until every event accepted so far is resolved (only while a worker runs; at most
        `timeout`, default read_wait, seconds, counted once the worker has started, which it is
        given at most start_wait seconds for); True when it is."""
        if not self.resolving:
            return True
        upto, resolved = self.inbox_position()
        wait = self.read_wait if timeout is None else timeout
        if resolved < upto and self.worker_ready is not None:
            started_by = time.monotonic() + self.start_wait
            while not self.worker_ready() and time.monotonic() < started_by:
                time.sleep(0.01)
        deadline = time.monotonic() + wait
        if resolved < upto and self.nudge is not None:
            self.nudge()  # no need to wait for the worker's next round
        next_read = time.monotonic() + 0.1
        while resolved < upto:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
            # The worker's word (shared memory) first; the store now and then (another worker).
            if self.worker_position is not None:
                resolved = max(resolved, self.worker_position())
            if resolved < upto and time.monotonic() >= next_read:
                resolved, next_read = self.resolved_position(), time.monotonic() + 0.1
        return True

    def _backoff(self, attempts: int) -> timedelta:
        retry = self.config.sync.retry
        return timedelta(seconds=min(retry.base_seconds * 2 ** (attempts - 1), retry.max_seconds))

    def _dead_letter(self, tx: Tx, event_id: str, channel: str, payload: str, received: str, attempts: int,
                     error: str) -> None:
        """Queue (or re-queue) a failed event for a retry with backoff. It writes only what the store
        holds already (the id, channel and payload text as received): a dead letter cannot fail on
        what made its event fail."""
        retry = self.config.sync.retry
        dead = attempts >= retry.max_attempts
        next_at = None if dead else iso(datetime.now(UTC) + self._backoff(attempts))
        tx.execute("INSERT INTO dlq (event_id, channel, payload, error, attempts, next_attempt_at, created_at, updated_at,"
                   " status) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (event_id) DO UPDATE SET "
                   "error = excluded.error, attempts = excluded.attempts, next_attempt_at = excluded.next_attempt_at, "
                   "updated_at = excluded.updated_at, status = excluded.status",
                   (event_id, channel, payload, error, attempts, next_at, received, now_iso(),
                    "dead" if dead else "pending"))
        tx.execute("UPDATE events SET status = 'failed', error = ? WHERE event_id = ?", (error, event_id))

    # -- dead-letter queue -----------------------------------------------------------------------
    def retry_due(self, tx: Tx, limit: int = 100) -> dict:
        """Retry the pending dead letters whose next attempt is due (the background task)."""
        rows = tx.all("SELECT event_id, channel, payload, attempts FROM dlq WHERE status = 'pending' "
                      "AND next_attempt_at <= ? ORDER BY next_attempt_at LIMIT ?", (now_iso(), limit))
        return self._retry(tx, rows)

    def _retry(self, tx: Tx, rows) -> dict:
        counts = {"resolved": 0, "failed": 0}
        if rows:
            self.resolver.refresh_suppressed(tx)
        for event_id, channel, payload, attempts in rows:
            try:  # one letter's failure, whatever it is, is that letter's only
                with tx.savepoint():
                    seq = tx.one("SELECT seq FROM events WHERE event_id = ?", (event_id,))
                    error = self._resolve(tx, load_event(payload), now_iso(), seq[0] if seq else 0)
            except Exception as exc:  # noqa: BLE001 - e.g. a payload this version cannot read
                error = reason(exc)
            if error is None:
                tx.execute("DELETE FROM dlq WHERE event_id = ?", (event_id,))
                counts["resolved"] += 1
            else:
                self._dead_letter(tx, event_id, channel, payload, now_iso(), attempts + 1, error)
                counts["failed"] += 1
        if rows:
            log.info("dead-letter retry: %d resolved, %d failed", counts["resolved"], counts["failed"])
        return counts

    def replay(self, event_ids: list[str] | None) -> dict:
        """Re-run dead letters now (all of them, or the given ids), whatever their status."""
        def job(tx: Tx) -> dict:
            rows = self._dlq_rows(tx, event_ids)
            return self._retry(tx, rows)
        return self.store.write(job)

    def drop(self, event_ids: list[str] | None) -> int:
        def job(tx: Tx) -> int:
            rows = self._dlq_rows(tx, event_ids)
            for row in rows:
                tx.execute("DELETE FROM dlq WHERE event_id = ?", (row[0],))
                tx.execute("UPDATE events SET status = 'dropped' WHERE event_id = ?", (row[0],))
            return len(rows)
        return self.store.write(job)

    @staticmethod
    def _dlq_rows(tx: Tx, event_ids: list[str] | None):
        if event_ids:
            return [r for e in event_ids for r in tx.all(
                "SELECT event_id, channel, payload, attempts FROM dlq WHERE event_id = ?", (e,))]
        return tx.all("SELECT event_id, channel, payload, attempts FROM dlq ORDER BY created_at")

    def dead_letters(self) -> list[dict]:
        self.wait_resolved()
        rows = self.store.read(lambda tx: tx.all(
            "SELECT event_id, channel, error, attempts, next_attempt_at, status, created_at FROM dlq ORDER BY created_at"))
        names = ("event_id", "channel", "error", "attempts", "next_attempt_at", "status", "created_at")
        return [dict(zip(names, r)) for r in rows]

    # -- reading ---------------------------------------------------------------------------------
    def profile(self, id_type: str, value: str) -> dict | None:
        if id_type not in self.config.identity.types:
            raise KeyError(id_type)
        normalized = self.resolver.mapping.identifier(id_type, value)
        if normalized is None:
            return None
        self.wait_resolved()

        def read(tx: Tx):
            row = tx.one("SELECT person_id FROM identifiers WHERE id_type = ? AND value = ?", (id_type, normalized))
            if row is None:
                return None
            person = row[0]
            status = tx.one("SELECT status, origin, created_at FROM persons WHERE person_id = ?", (person,))
            golden = tx.all("SELECT field, value, source, record_key, last_modified FROM golden WHERE person_id = ? "
                            "ORDER BY field", (person,))
            identifiers = tx.all("SELECT id_type, value FROM identifiers WHERE person_id = ? ORDER BY id_type, value",
                                 (person,))
            return {
                "person_id": person,
                "status": status[0] if status else None,
                "origin": status[1] if status else None,
                "golden": {f: v for f, v, *_ in golden},
                "provenance": {f: {"source": s, "record_key": k, "last_modified": t} for f, _, s, k, t in golden},
                "identifiers": [{"type": t, "value": v} for t, v in identifiers],
            }
        return self.store.read(read)

    def counts(self) -> dict:
        self.wait_resolved()

        def read(tx: Tx):
            out = {}
            for table in ("events", "persons", "identifiers", "change_log", "review_queue"):
                out[table] = tx.one(f"SELECT COUNT(*) FROM {table}")[0]
            out["dlq_pending"] = tx.one("SELECT COUNT(*) FROM dlq WHERE status = 'pending'")[0]
            out["dlq_dead"] = tx.one("SELECT COUNT(*) FROM dlq WHERE status = 'dead'")[0]
            out["refetch"] = tx.one("SELECT COUNT(*) FROM records WHERE refetch = 1")[0]
            return out
        return self.store.read(read)

    def refetch(self) -> list[dict]:
        self.wait_resolved()
        rows = self.store.read(lambda tx: tx.all(
            "SELECT source, object, record_key FROM records WHERE refetch = 1 ORDER BY source, record_key"))
        return [{"source": s, "object": o, "record_key": k} for s, o, k in rows]

    def export(self, out_dir: Path | None = None) -> dict:
        from resolver.sync.batch import export

        return export(self, Path(out_dir) if out_dir else self.export_dir())

    def export_dir(self) -> Path:
        if self.config.sync.export_dir:
            path = Path(self.config.sync.export_dir)
            return path if path.is_absolute() else self.config.base_dir / path
        if self.state_dir is None:
            raise StoreError("no export folder: give --out, sync.export_dir or a state directory")
        return self.state_dir / "sync-export"


def dumps(obj) -> str:
    return json.dumps(obj, indent=2, default=str)


def _batch_pending(store: Store, state_dir: Path) -> bool:
    """Does the state's live version (its CURRENT pointer) differ from the one the store imported
    last? A cheap look: import_batch validates the state when it loads it."""
    pointer = state_dir / "CURRENT"
    return pointer.exists() and pointer.read_text(encoding="utf-8").strip() != store.meta("batch_version")


# JSON lets a lone surrogate through ("\ud800"); no database driver or encoder takes one. Event JSON
# is ASCII (escaped), so the escape is found without parsing.
_SURROGATE = re.compile("[\ud800-\udfff]")
_ESCAPED_SURROGATE = re.compile(r"\\u[dD][89a-fA-F]")


def _without_surrogates(obj):
    if isinstance(obj, str):
        return _SURROGATE.sub("\ufffd", obj)
    if isinstance(obj, list):
        return [_without_surrogates(v) for v in obj]
    if isinstance(obj, dict):
        return {_without_surrogates(k): _without_surrogates(v) for k, v in obj.items()}
    return obj


def load_event(payload: str) -> Event:
    """An event's stored JSON as an Event, lone surrogates replaced by U+FFFD (as the inbox keeps
    them, escaped, from before they were replaced at ingest)."""
    data = json.loads(payload)
    if _ESCAPED_SURROGATE.search(payload):
        data = _without_surrogates(data)
    return Event(**data)


def _storable(event: Event) -> tuple[str, str]:
    """(event id, JSON payload) of an event as the inbox keeps it: lone surrogates replaced."""
    payload = event.to_json()
    if not _ESCAPED_SURROGATE.search(payload):
        return event.event_id, payload
    event = load_event(payload)
    return event.event_id, event.to_json()


def reason(exc: BaseException) -> str:
    """Why an event failed, as text every store takes (no lone surrogate, no NUL), kept short."""
    text = f"{type(exc).__name__}: {exc}".encode("utf-8", "backslashreplace").decode("utf-8")
    return text.replace("\x00", "\\x00")[:500]
