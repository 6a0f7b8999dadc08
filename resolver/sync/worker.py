"""The resolver worker: resolution off the request path.

A webhook request only validates, authenticates and durably appends its events to the inbox
(store.py: one group-committed transaction for all concurrent requests), then answers. The worker
drains the inbox in arrival order, in batches: it reads whatever has arrived since its position
(up to BATCH events), normalizes their identifiers and attributes in one vectorized call per
type (outside any write transaction), then records them in the `events` table and resolves them
one by one, in transactions of CHUNK events (should one fail, again with each event in its own
savepoint: a failing event goes to the dead-letter queue, the others stand), each of which also
moves the position (meta `inbox_seq`); on PostgreSQL in pipeline mode (fewer round trips).
Without savepoints, what a chunk's events read (their stored records, their identifiers' holders,
the holders' counts per limited type, golden fields) is read for all of them at once on
PostgreSQL and kept current with what they write (queries.Known), and what nothing in the chunk
reads (change log rows, events marked resolved) is written at its end in one statement each.
Between batches it runs the model's step for new records and the blocking-key index (once a
second) and the due dead-letter retries.

`resolver serve` runs the worker in a process of its own (`start_worker(..., "process")`), so its
CPU does not compete with the event loop for one interpreter lock; an application embedding the
service may run it as a thread (`"thread"`, the default of `create_app`). Both drain the same
inbox the same way. The worker process exits when its parent is gone.

Crash safety: the position moves in the transaction that resolves the events up to it (and is
re-read inside it, so two workers never resolve one event twice), so a crash at any point leaves
every unresolved event after the position, and the next worker resolves them (the service
answers meanwhile). A failing event never stops the worker: it goes to the dead-letter queue
(see _resolve_chunk), and the events after it go on.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import multiprocessing
import os
import threading
import time

from resolver.sync.logs import configure_logging
from resolver.sync.payloads import Event, parse_cdc, parse_segment
from resolver.sync.queries import Known
from resolver.sync.service import SyncService, load_event, reason
from resolver.sync.store import Tx, set_meta

log = logging.getLogger("resolver.sync")

BATCH = 200  # events normalized together at most
CYCLE = 0.2  # seconds between batches when caught up: a batch holds what arrived meanwhile
CHUNK = 50  # events per resolution transaction (lookups see progress chunk by chunk)
STOP_DRAIN = 2.0  # seconds a worker process keeps resolving once asked to stop (SIGTERM is honoured promptly)


class Worker:
    def __init__(self, service, retry_interval: float = 1.0, index_interval: float = 1.0,
                 cycle: float = CYCLE, batch: int = BATCH, chunk: int = CHUNK):
        self.service = service
        self.store = service.store
        self.retry_interval, self.index_interval = retry_interval, index_interval
        self.cycle, self.batch, self.chunk = cycle, batch, chunk
        self.progress: Progress | None = None  # set by run()
        self._conn = None

    @property
    def conn(self):
        if self._conn is None:
            self._conn = self.store.derived_connection()
        return self._conn

    def _write(self, fn):
        try:
            return self.store.transaction(self.conn, fn, pipelined=True)
        except Exception:
            self._reset()
            raise

    def _reset(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None

    # -- one step ----------------------------------------------------------------------------------
    def drain_once(self) -> int:
        """Take in and resolve the next events of the inbox (one batch); returns how many."""
        from resolver.sync.forget import ERASED_PAYLOAD

        position = self.service.resolved_position()
        rows = self.service.inbox.read(lambda tx: tx.all(
            "SELECT seq, event_id, channel, received_at, payload FROM inbox WHERE seq > ? ORDER BY seq LIMIT ?",
            (position, self.batch)))
        if not rows:
            return 0
        batch = [(seq, event_id, channel, received, payload, _event(event_id, channel, payload, ERASED_PAYLOAD))
                 for seq, event_id, channel, received, payload in rows]
        self._prepare([event for *_, event in batch if isinstance(event, Event)])
        for start in range(0, len(batch), self.chunk):
            self._resolve_chunk(batch[start:start + self.chunk])
        return len(batch)

    def _prepare(self, events: list[Event]) -> None:
        """Normalization is pure CPU: done for the whole batch before the write transaction. Should
        it fail, it is done event by event, and an event whose own values fail is left to fail
        again in its resolution, where it goes to the dead-letter queue."""
        resolver = self.service.resolver
        try:
            resolver.mapping.prepare(events)
        except Exception:  # noqa: BLE001 - one event's values: the others are still prepared
            for event in events:
                with contextlib.suppress(Exception):
                    resolver.mapping.prepare([event])

    def _resolve_chunk(self, chunk: list, isolated: bool = False) -> None:
        """Resolve a chunk in one transaction: first with no savepoints (the common case: nothing
        fails); should that fail, again with each event in a savepoint of its own (a failing event
        dead-lettered); should that fail too (the transaction itself), event by event."""
        lock = " FOR UPDATE" if self.store.dialect == "postgresql" else ""  # SQLite: BEGIN IMMEDIATE

        from resolver.sync.forget import ERASED_PAYLOAD

        def work(tx: Tx) -> list[str]:
            # Where the store is now (another worker, e.g. one left over from a crashed parent,
            # may have moved on meanwhile): the position moves with what it resolves, atomically.
            row = tx.one("SELECT value FROM meta WHERE key = 'inbox_seq'" + lock)
            position = int(row[0]) if row else 0
            self.service.resolver.refresh_suppressed(tx)
            todo = [item for item in chunk if item[0] > position]
            # Unisolated, the chunk's events are recorded with one statement (one round trip); one
            # by one when some cannot be read (their failed rows keep their place in arrival order).
            each = isolated or any(isinstance(item[5], Exception) for item in todo)
            fresh = {} if each else self.service.record_events(tx, [item[1:] for item in todo])
            # Unisolated, what the chunk's events read is kept for the chunk (any failure throws the
            # transaction away whole, so it cannot go stale).
            known = None if each else self._chunk_reads(
                tx, [item[5] for item in todo if item[5] is not None and item[1] in fresh])
            last = None
            for seq, event_id, channel, received, payload, event in todo:
                if isinstance(event, Exception):  # kept and dead-lettered, but nothing can be made of it
                    self._dead_letter(tx, (seq, event_id, channel, received, payload), event, "unreadable payload: ")
                elif each:
                    self.service.resolve_accepted(tx, event_id, channel, received, payload, event)
                elif event is not None and event_id in fresh:
                    self.service.apply_event(tx, event, received, fresh[event_id], known)
                last = seq
            if known is not None:
                self.service.write_deferred(tx, known)
            if last is not None:
                set_meta(tx, "inbox_seq", str(last))
            # The events that carried erased values (resolved without them, payload blanked).
            ids = [event_id for _, event_id, _, _, _, event in chunk if isinstance(event, Event)]
            marks = ", ".join("?" * len(ids))
            return [e for (e,) in tx.all(f"SELECT event_id FROM events WHERE payload = ? AND event_id IN ({marks})",
                                         [ERASED_PAYLOAD, *ids])] if ids else []

        try:
            erased = self._write(work)
        except Exception as exc:  # noqa: BLE001 - which event? each on its own, the failing one dead-lettered
            if not isolated:
                self._resolve_chunk(chunk, isolated=True)
            elif len(chunk) > 1:
                log.warning("resolver worker: a chunk of %d events failed (%s); taking them one by one",
                            len(chunk), type(exc).__name__)
                for item in chunk:
                    self._resolve_chunk([item], isolated=True)
            else:
                self._fail(chunk[0], exc)
            return
        if self.progress is not None:
            self.progress.moved(chunk[-1][0])
        if erased:  # their raw payload goes from the inbox too
            marks = ", ".join("?" * len(erased))
            self.service.inbox.write(lambda tx: tx.execute(
                f"UPDATE inbox SET payload = ? WHERE event_id IN ({marks})", [ERASED_PAYLOAD, *erased]))

    def _chunk_reads(self, tx: Tx, events: list[Event]):
        """A queries.Known for a chunk's events: on PostgreSQL what they will read, read for all of
        them at once (each read is a round trip); on SQLite a read is an in-process call, cheaper
        than guessing ahead: each is read when needed (and then known)."""
        if self.store.dialect != "postgresql":
            return Known()
        return self.service.resolver.prefetch(tx, events)

    def _dead_letter(self, tx: Tx, item: tuple, exc: BaseException, prefix: str = "") -> None:
        """Keep a failed event (a failed row in `events`, where the store takes it) and queue it for
        a retry, with the reason."""
        seq, event_id, channel, received, payload = item
        error = prefix + reason(exc)
        log.warning("event %s failed: %s", event_id, type(exc).__name__)
        with contextlib.suppress(Exception), tx.savepoint():
            tx.execute("INSERT INTO events (event_id, channel, received_at, payload, status, error) "
                       "VALUES (?, ?, ?, ?, 'failed', ?) ON CONFLICT (event_id) DO NOTHING",
                       (event_id, channel, received, payload, error))
        self.service._dead_letter(tx, event_id, channel, payload, received, 1, error)

    def _fail(self, item: tuple, exc: BaseException) -> None:
        """One event whose transaction failed, whatever the cause: dead-letter it and move the
        position past it, so that the events after it go on. If even that fails, the store is what
        fails: raise (the loop tries again later)."""
        lock = " FOR UPDATE" if self.store.dialect == "postgresql" else ""
        seq = item[0]

        def work(tx: Tx) -> None:
            row = tx.one("SELECT value FROM meta WHERE key = 'inbox_seq'" + lock)
            if row is not None and int(row[0]) >= seq:
                return  # another worker took it in meanwhile
            self._dead_letter(tx, item[:5], exc)
            set_meta(tx, "inbox_seq", str(seq))

        self._write(work)
        if self.progress is not None:
            self.progress.moved(seq)

    def check_position(self) -> None:
        """An inbox behind the store's position (it was replaced): take it in from its start again
        (events the store has already are recognised by their ids)."""
        self._write(lambda tx: tx.execute("INSERT INTO meta (key, value) VALUES ('inbox_seq', '0') "
                                          "ON CONFLICT (key) DO NOTHING"))
        accepted, resolved = self.service.inbox_position()
        if accepted < resolved:
            log.error("the inbox ends at %d, before the store's position %d: taking it in again", accepted, resolved)
            self._write(lambda tx: set_meta(tx, "inbox_seq", "0"))

    def drain(self, deadline: float | None = None) -> int:
        """Resolve everything accepted so far (until `deadline`, a time.monotonic() value)."""
        total = 0
        while deadline is None or time.monotonic() < deadline:
            n = self.drain_once()
            if n == 0:
                break
            total += n
        return total

    def housekeeping(self, now: float, state: dict) -> None:
        """The model's step and the key index every index_interval, due retries every retry_interval."""
        resolver = self.service.resolver
        jobs = []
        if now - state.get("index", 0.0) >= self.index_interval:
            state["index"] = now
            jobs += [resolver.match_pending, resolver.flush_index]
        if now - state.get("retry", 0.0) >= self.retry_interval:
            state["retry"] = now
            jobs.append(self.service.retry_due)
        for job in jobs:
            try:
                self._write(job)
            except Exception as exc:  # noqa: BLE001 - try again next round
                log.error("background %s failed: %s", getattr(job, "__name__", "job"), type(exc).__name__)

    def warm_up(self) -> None:
        """Run every resolution step once on made-up events, in a transaction that is rolled back:
        compiled kernels and first-call costs are paid before the first real batch."""
        class _Rollback(Exception):
            pass

        name = {"FirstName": "Warm", "LastName": "Upton"}
        address = {"Street": "1 Main St", "City": "Oakland", "PostalCode": "94607", "Country": "US"}
        events = parse_segment(json.dumps({"type": "identify", "messageId": "resolver-warm-up", "userId": "warm-up",
                                           "anonymousId": "warm-up", "traits": {"email": "warm.up@example.com",
                                                                                "phone": "+14155550100"}}).encode())
        for obj, prefix in (("Contact", "0035g00000WARMA"), ("Lead", "00Q5g00000WARMA")):
            events += parse_cdc(json.dumps({"payload": {
                "ChangeEventHeader": {"entityName": obj, "recordIds": [prefix], "changeType": "CREATE",
                                      "transactionKey": f"warm-up-{obj}", "sequenceNumber": 1,
                                      "commitTimestamp": 1717350011000},
                "Name": name, "Email": "warm.up@example.com", "Phone": "(415) 555-0100", "MailingAddress": address,
                "Address": address, "Company": "Warm Up"}}).encode())
        resolver = self.service.resolver

        def work(tx: Tx) -> None:
            resolver.refresh_suppressed(tx)
            resolver.mapping.prepare(events)
            for event in events:
                with contextlib.suppress(Exception), tx.savepoint():
                    resolver.apply(tx, event, events[0].timestamp or "2024-01-01T00:00:00.000000Z")
            for step in (resolver.match_pending, resolver.flush_index):
                with contextlib.suppress(Exception), tx.savepoint():
                    step(tx)
            raise _Rollback

        try:
            self._write(work)
        except _Rollback:
            pass
        except Exception as exc:  # noqa: BLE001 - only a warm-up
            log.warning("resolver worker: warm-up failed: %s", type(exc).__name__)

    # -- the loop ----------------------------------------------------------------------------------
    def run(self, stop, parent_pid: int | None = None, drain_seconds: float = 30.0, ready=None, wake=None,
            progress=None) -> None:
        """Drain and tidy until `stop` (a threading or multiprocessing Event) is set, then resolve
        what is left (at most drain_seconds) and return. `ready` (an Event) is set once warmed up;
        `wake` (an Event) ends a wait between batches early (a lookup is waiting for the inbox);
        `progress` (a Progress) says when a batch last went through, for /healthz."""
        wake = wake if wake is not None else stop
        self.progress = progress
        state: dict = {}
        try:
            self.check_position()
            self.warm_up()  # made-up events only: nothing in the inbox can hold up the start
            gc.collect()
            gc.freeze()  # what is loaded by now stays: out of the collector's full passes
            if ready is not None:
                ready.set()
            while not stop.is_set():
                started = time.monotonic()
                if parent_pid is not None and os.getppid() != parent_pid:
                    log.error("resolver worker: the service process is gone; exiting")
                    return
                try:
                    n = self.drain_once()
                    if progress is not None:
                        progress.batch_done(n)
                except Exception as exc:  # noqa: BLE001 - e.g. the store is unreachable: try again
                    log.error("resolver worker: a batch failed: %s", type(exc).__name__)
                    self._reset()
                    n = 0
                    stop.wait(0.5)
                self.housekeeping(time.monotonic(), state)
                if n < self.batch:  # caught up: let the next batch gather (normalizing many at once is cheaper)
                    wake.wait(max(0.0, started + self.cycle - time.monotonic()))
                    if wake is not stop:
                        wake.clear()
            with contextlib.suppress(Exception):
                self.drain(time.monotonic() + drain_seconds)
                self.housekeeping(float("inf"), {})
        finally:
            self._reset()


def _event(event_id: str, channel: str, payload: str, erased: str) -> Event | Exception | None:
    """The inbox payload as an Event; None when it was erased; the error when it cannot be read
    (e.g. written by another version, or nested too deep): one such event must not stop the worker."""
    if payload == erased:
        return None
    try:
        event = load_event(payload)
        if (event.event_id, event.channel) != (event_id, channel):
            raise ValueError("the payload names another event")
        return event
    except Exception as exc:  # noqa: BLE001 - any failure to read it is this event's
        log.error("event %s: unreadable payload in the inbox (%s)", event_id, type(exc).__name__)
        return exc


# -- running it --------------------------------------------------------------------------------------
class Progress:
    """When the worker started, when it last took in events (wall-clock seconds, 0: never), and
    the inbox position it has committed, in memory it shares with the service (the worker may be a
    process of its own): /healthz reads it, and lookups wait on it without asking the store."""

    def __init__(self, context=multiprocessing):
        self.times = context.RawArray("d", 3)
        self.times[0] = time.time()

    @property
    def position(self) -> int:
        return int(self.times[2])

    def moved(self, seq: int) -> None:
        """The worker committed the position `seq` (float64 holds every integer up to 2**53)."""
        self.times[2] = max(self.times[2], float(seq))

    @property
    def started_at(self) -> float:
        return self.times[0]

    @property
    def last_batch_at(self) -> float | None:
        return self.times[1] or None

    def batch_done(self, events: int) -> None:
        if events:
            self.times[1] = time.time()


class _ThreadWorker:
    def __init__(self, service, **options):
        self.stop_event, self.ready_event, self.wake_event = threading.Event(), threading.Event(), threading.Event()
        self.progress = Progress()
        self.worker = Worker(service, **options)
        self.thread = threading.Thread(target=self.worker.run, args=(self.stop_event,),
                                       kwargs={"ready": self.ready_event, "wake": self.wake_event,
                                               "progress": self.progress},
                                       name="resolver-worker", daemon=True)
        self.thread.start()

    def ready(self) -> bool:
        return self.ready_event.is_set()

    def alive(self) -> bool:
        return self.thread.is_alive()

    def wake(self) -> None:
        self.wake_event.set()

    def stop(self, timeout: float = 60) -> None:
        self.stop_event.set()
        self.wake_event.set()
        self.thread.join(timeout)


def _process_main(config, state_dir, url, options: dict, stop, ready, wake, progress: Progress, parent_pid: int,
                  log_level: int) -> None:
    import signal

    # Ctrl-C reaches the whole process group: the parent stops the worker (which first resolves
    # what is left), so the worker itself ignores it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    configure_logging(log_level)
    with contextlib.suppress(Exception):
        import numba

        numba.set_num_threads(1)  # one batch at a time: parallel kernels would only pay thread wake-ups
    service = SyncService(config, state_dir, url, import_batch=False)
    try:
        # Stopping does not wait for a backlog: what is left stays in the inbox for the next start.
        Worker(service, **options).run(stop, parent_pid=parent_pid, ready=ready, wake=wake, progress=progress,
                                       drain_seconds=STOP_DRAIN)
    finally:
        service.close()


class _ProcessWorker:
    def __init__(self, service, **options):
        import multiprocessing

        context = multiprocessing.get_context("spawn")  # no fork of a process with threads
        self.stop_event, self.ready_event, self.wake_event = context.Event(), context.Event(), context.Event()
        self.progress = Progress(context)
        self.process = context.Process(
            target=_process_main, name="resolver-worker", daemon=True,
            args=(service.config, service.state_dir, service.store.url, options, self.stop_event, self.ready_event,
                  self.wake_event, self.progress, os.getpid(), logging.getLogger().getEffectiveLevel()))
        self.process.start()

    def ready(self) -> bool:
        return self.ready_event.is_set()

    def alive(self) -> bool:
        return self.process.is_alive()

    def wake(self) -> None:
        self.wake_event.set()

    def stop(self, timeout: float = 60) -> None:
        self.stop_event.set()
        self.wake_event.set()
        self.process.join(timeout)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(5)


def start_worker(service, mode: str = "thread", **options):
    """Start draining the service's inbox: in a thread of this process, or in a process of its own."""
    if mode == "thread":
        return _ThreadWorker(service, **options)
    if mode == "process":
        return _ProcessWorker(service, **options)
    raise ValueError(f"worker mode {mode!r}: thread or process")
