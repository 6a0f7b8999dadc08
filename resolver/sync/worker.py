"""The resolver worker: resolution off the request path.

A webhook request only validates, authenticates and durably appends its events to the inbox (the
`events` table, status `accepted`, one group-committed transaction for all concurrent requests),
then answers. The worker drains the inbox in arrival order, in batches: it reads whatever has
arrived (up to `batch` events), normalizes their identifiers and attributes in one vectorized
call per type (outside any write transaction), then resolves them one by one in ONE transaction
(each in its own savepoint: a failing event goes to the dead-letter queue, the others stand) and
marks them `resolved` (or `failed`). Between batches it runs the model's step for new records and
the blocking-key index (a few times a second) and the due dead-letter retries.

`resolver serve` runs the worker in a process of its own (`start_worker(..., "process")`), so its
CPU does not compete with the event loop for one interpreter lock; an application embedding the
service may run it as a thread (`"thread"`, the default of `create_app`). Both drain the same
inbox the same way. The worker process exits when its parent is gone.

Crash safety: an event is `accepted` until the transaction that resolves it commits, and only
`accepted` events are picked up (re-checked inside the write transaction, so two workers never
resolve one event twice), so a crash at any point leaves every unresolved event in the inbox, and
the next start resolves it before the service reports healthy.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time

from resolver.sync.payloads import Event
from resolver.sync.store import Tx

log = logging.getLogger("resolver.sync")

BATCH = 200  # events per resolution transaction at most (bounds how long the write lock is held)


class Worker:
    def __init__(self, service, retry_interval: float = 1.0, index_interval: float = 0.25,
                 poll_interval: float = 0.01, batch: int = BATCH):
        self.service = service
        self.store = service.store
        self.retry_interval, self.index_interval = retry_interval, index_interval
        self.poll_interval, self.batch = poll_interval, batch
        self._conn = None

    @property
    def conn(self):
        if self._conn is None:
            self._conn = self.store.derived_connection()
        return self._conn

    def _write(self, fn):
        try:
            return self.store.transaction(self.conn, fn)
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
        """Resolve the oldest accepted events (one batch); returns how many were picked up."""
        rows = self.store.read(lambda tx: tx.all(
            "SELECT seq, received_at, payload FROM events WHERE status = 'accepted' ORDER BY seq LIMIT ?",
            (self.batch,)))
        if not rows:
            return 0
        batch = [(seq, received, Event.from_json(payload)) for seq, received, payload in rows]
        # Normalization is pure CPU: done before the write lock is taken.
        self.service.resolver.prepare([event for _, _, event in batch])
        first, last = batch[0][0], batch[-1][0]
        lock = " FOR UPDATE" if self.store.dialect == "postgresql" else ""

        def work(tx: Tx) -> int:
            # Only what is still accepted now (another worker, e.g. one left over from a crashed
            # parent, may have resolved some of them meanwhile).
            self.service.resolver.refresh_suppressed(tx)
            pending = {seq for (seq,) in tx.all(
                f"SELECT seq FROM events WHERE status = 'accepted' AND seq >= ? AND seq <= ?{lock}", (first, last))}
            done = 0
            for seq, received, event in batch:
                if seq in pending:
                    self.service.resolve_accepted(tx, seq, event, received)
                    done += 1
            return done

        self._write(work)
        return len(batch)

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

    # -- the loop ----------------------------------------------------------------------------------
    def run(self, stop, parent_pid: int | None = None, drain_seconds: float = 30.0) -> None:
        """Drain and tidy until `stop` (a threading or multiprocessing Event) is set, then resolve
        what is left (at most drain_seconds) and return."""
        state: dict = {}
        try:
            while not stop.is_set():
                if parent_pid is not None and os.getppid() != parent_pid:
                    log.error("resolver worker: the service process is gone; exiting")
                    return
                try:
                    n = self.drain_once()
                except Exception as exc:  # noqa: BLE001 - e.g. the store is unreachable: try again
                    log.error("resolver worker: a batch failed: %s", type(exc).__name__)
                    self._reset()
                    n = 0
                    stop.wait(0.5)
                self.housekeeping(time.monotonic(), state)
                if n == 0:
                    stop.wait(self.poll_interval)
            with contextlib.suppress(Exception):
                self.drain(time.monotonic() + drain_seconds)
                self.housekeeping(float("inf"), {})
        finally:
            self._reset()


# -- running it --------------------------------------------------------------------------------------
class _ThreadWorker:
    def __init__(self, service, **options):
        self.stop_event = threading.Event()
        self.worker = Worker(service, **options)
        self.thread = threading.Thread(target=self.worker.run, args=(self.stop_event,), name="resolver-worker",
                                       daemon=True)
        self.thread.start()

    def alive(self) -> bool:
        return self.thread.is_alive()

    def stop(self, timeout: float = 60) -> None:
        self.stop_event.set()
        self.thread.join(timeout)


def _process_main(config, state_dir, url, options: dict, stop, parent_pid: int, log_level: int) -> None:
    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with contextlib.suppress(Exception):
        import numba

        numba.set_num_threads(1)  # one batch at a time: parallel kernels would only pay thread wake-ups
    from resolver.sync.service import SyncService

    service = SyncService(config, state_dir, url, import_batch=False)
    try:
        Worker(service, **options).run(stop, parent_pid=parent_pid)
    finally:
        service.close()


class _ProcessWorker:
    def __init__(self, service, **options):
        import multiprocessing

        context = multiprocessing.get_context("spawn")  # no fork of a process with threads
        self.stop_event = context.Event()
        self.process = context.Process(
            target=_process_main, name="resolver-worker", daemon=True,
            args=(service.config, service.state_dir, service.store.url, options, self.stop_event, os.getpid(),
                  logging.getLogger().getEffectiveLevel()))
        self.process.start()

    def alive(self) -> bool:
        return self.process.is_alive()

    def stop(self, timeout: float = 60) -> None:
        self.stop_event.set()
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
