"""The sync store: accepted events, persons, identifiers, golden fields, change log, review queue
and dead-letter queue, in SQLite (embedded default) or PostgreSQL (by URL).

One SQL dialect for both: statements are written with `?` placeholders (PostgreSQL gets `%s`),
upserts with `ON CONFLICT`, and the few DDL differences (an auto-increment key) are filled in.

Two stores by one URL, each with one writer:

- the inbox (`Store(url, inbox=True)`: the `inbox` table; on SQLite a database file of its own,
  `<path>.inbox`, so that its writer never waits for the resolver's write lock, nor the resolver
  for its fsyncs; on PostgreSQL a table of the same database). Webhook requests append their
  events there through `Store.submit`: one thread takes every job waiting in its queue, runs them
  in ONE transaction (each job in its own savepoint, so one failure rolls back only that job) and
  commits once before any job is answered. That is group commit: with SQLite `synchronous=FULL`
  (the default here) every commit is fsynced, so an answered request survives a power loss, and
  one fsync covers all the requests that arrived while the previous one ran.
  `?synchronous=normal` in the URL trades that for speed (WAL + NORMAL survives a crash of the
  process, not of the machine);
- the store proper (`Store(url)`): what the resolver (worker.py) derives from the inbox, with
  the inbox position it has reached (meta `inbox_seq`) in the same transactions. Everything in it
  can be derived again from the inbox, so the resolver's commits are not fsynced on their own
  (SQLite `synchronous=NORMAL`, PostgreSQL `synchronous_commit=off`: `Store.derived_connection`):
  a power loss can only drop a suffix of them (the write-ahead log is sequential), position
  included, and the resolver then resolves those inbox events again. The CLI's writes
  (`Store.write`) are fsynced.

Reads use their own connection per thread (WAL readers never block the writer).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

log = logging.getLogger("resolver.sync")

SCHEMA = [
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)",
    """CREATE TABLE IF NOT EXISTS events (
        seq {serial} PRIMARY KEY, event_id TEXT NOT NULL UNIQUE, channel TEXT NOT NULL,
        received_at TEXT NOT NULL, payload TEXT NOT NULL, status TEXT NOT NULL, person_id TEXT, error TEXT)""",
    """CREATE TABLE IF NOT EXISTS persons (
        person_id TEXT PRIMARY KEY, origin TEXT NOT NULL, created_at TEXT NOT NULL, status TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS identifiers (
        id_type TEXT NOT NULL, value TEXT NOT NULL, person_id TEXT NOT NULL, origin TEXT NOT NULL,
        PRIMARY KEY (id_type, value))""",
    "CREATE INDEX IF NOT EXISTS identifiers_person ON identifiers (person_id)",
    """CREATE TABLE IF NOT EXISTS golden (
        person_id TEXT NOT NULL, field TEXT NOT NULL, value TEXT, source TEXT, record_key TEXT,
        last_modified TEXT, event_id TEXT, PRIMARY KEY (person_id, field))""",
    """CREATE TABLE IF NOT EXISTS records (
        source TEXT NOT NULL, record_key TEXT NOT NULL, object TEXT, person_id TEXT, fields TEXT NOT NULL,
        last_modified TEXT, deleted INTEGER NOT NULL DEFAULT 0, refetch INTEGER NOT NULL DEFAULT 0,
        updated_seq BIGINT NOT NULL DEFAULT 0, PRIMARY KEY (source, record_key))""",
    """CREATE TABLE IF NOT EXISTS block_keys (
        rule INTEGER NOT NULL, key BIGINT NOT NULL, person_id TEXT NOT NULL, PRIMARY KEY (rule, key, person_id))""",
    # By person: a merge moves, and an erasure removes, everything a person holds.
    "CREATE INDEX IF NOT EXISTS block_keys_person ON block_keys (person_id)",
    "CREATE INDEX IF NOT EXISTS records_person ON records (person_id)",
    "CREATE INDEX IF NOT EXISTS events_person ON events (person_id)",
    """CREATE TABLE IF NOT EXISTS change_log (
        seq {serial} PRIMARY KEY, event_id TEXT, person_id TEXT, field TEXT NOT NULL, before TEXT, after TEXT,
        source TEXT, at TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS review_queue (
        seq {serial} PRIMARY KEY, event_id TEXT, record_key TEXT, person_id TEXT, candidate_id TEXT,
        probability DOUBLE PRECISION, reason TEXT NOT NULL, created_at TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS match_queue (
        seq {serial} PRIMARY KEY, event_id TEXT, source TEXT NOT NULL, record_key TEXT NOT NULL,
        person_id TEXT NOT NULL, attributes TEXT NOT NULL, created_at TEXT NOT NULL)""",
    # Salted hashes (erasure.salted) of erased identifiers and records: `serve` never stores them again.
    "CREATE TABLE IF NOT EXISTS suppressed (salted_hash BIGINT PRIMARY KEY, kind TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS dlq (
        event_id TEXT PRIMARY KEY, channel TEXT NOT NULL, payload TEXT NOT NULL, error TEXT NOT NULL,
        attempts INTEGER NOT NULL, next_attempt_at TEXT, created_at TEXT NOT NULL, updated_at TEXT NOT NULL,
        status TEXT NOT NULL)""",
]


# Accepted events, as received, in arrival order: what the request path writes (and all it writes).
INBOX_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS inbox (
        seq {serial} PRIMARY KEY, event_id TEXT NOT NULL UNIQUE, channel TEXT NOT NULL, received_at TEXT NOT NULL,
        payload TEXT NOT NULL)""",
    # Where a pulled subscription stands (sync/pubsub.py: the replay id after the last stored
    # event), written in the transaction that appends those events.
    """CREATE TABLE IF NOT EXISTS cursors (name TEXT PRIMARY KEY, position TEXT NOT NULL)""",
]


def now_iso() -> str:
    return iso(datetime.now(UTC))


def iso(ts: datetime) -> str:
    """UTC timestamps as fixed-width text, so that text order is time order in both databases."""
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class StoreError(ValueError):
    """A store URL that cannot be used (the message names it)."""


class Tx:
    """One connection inside a transaction: `?`-style statements for either database."""

    def __init__(self, conn, dialect: str, pipeline=None):
        self.conn = conn
        self.dialect = dialect
        # PostgreSQL pipeline mode (Store.transaction(..., pipelined=True)): statements are sent
        # without waiting for their results, which come with the next read or sync; `execute`'s
        # row count is then -1 (use RETURNING).
        self.pipeline = pipeline
        self.unsynced = False  # pipelined statements sent since the last result read (errors unseen)
        self._savepoints = 0

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s") if self.dialect == "postgresql" else sql

    def execute(self, sql: str, params: tuple | list = ()) -> int:
        cur = self.conn.execute(self._sql(sql), tuple(params))
        self.unsynced = self.pipeline is not None
        return cur.rowcount

    def executemany(self, sql: str, rows: list) -> None:
        if not rows:
            return
        if self.dialect == "postgresql":
            with self.conn.cursor() as cur:
                cur.executemany(self._sql(sql), rows)
        else:
            self.conn.executemany(sql, rows)

    def all(self, sql: str, params: tuple | list = ()) -> list[tuple]:
        rows = list(self.conn.execute(self._sql(sql), tuple(params)).fetchall())
        self.unsynced = False  # a read waits for everything sent before it, errors included
        return rows

    def one(self, sql: str, params: tuple | list = ()) -> tuple | None:
        row = self.conn.execute(self._sql(sql), tuple(params)).fetchone()
        self.unsynced = False
        return row

    def savepoint(self) -> _Savepoint:
        self._savepoints += 1
        return _Savepoint(self, f"sp{self._savepoints}")


class _Savepoint:
    def __init__(self, tx: Tx, name: str):
        self.tx, self.name = tx, name

    def __enter__(self):
        self.tx.execute(f"SAVEPOINT {self.name}")
        return self

    def __exit__(self, kind, exc, tb):
        if exc is None:
            try:
                if self.tx.unsynced:  # the errors of what was sent in it surface here, inside it
                    self.tx.pipeline.sync()
                    self.tx.unsynced = False
            except Exception:
                self._roll_back()
                raise
            self.tx.conn.execute(f"RELEASE SAVEPOINT {self.name}")
        else:
            self._roll_back()
        return False

    def _roll_back(self) -> None:
        if self.tx.pipeline is not None:  # an aborted pipeline takes no statement before a sync
            with contextlib.suppress(Exception):
                self.tx.pipeline.sync()
        self.tx.conn.execute(f"ROLLBACK TO SAVEPOINT {self.name}")
        self.tx.conn.execute(f"RELEASE SAVEPOINT {self.name}")


@dataclass
class _Job:
    fn: Callable[[Tx], Any]
    future: concurrent.futures.Future


class Store:
    """A store by URL: `sqlite:///path/to/sync.db` or `postgresql://user@host:port/db`; with
    `inbox=True` the inbox of that store (see the module docstring)."""

    def __init__(self, url: str, inbox: bool = False):
        self.url = url
        self.inbox = inbox
        self.schema = INBOX_SCHEMA if inbox else SCHEMA
        parsed = urlparse(url)
        options = {k: v[-1] for k, v in parse_qs(parsed.query).items()}
        if parsed.scheme == "sqlite":
            self.dialect = "sqlite"
            path = url.split("://", 1)[1].split("?", 1)[0]
            path = path.removeprefix("/")  # sqlite:///relative, sqlite:////absolute
            if not path:
                raise StoreError(f"{url}: no database file in the sqlite URL")
            self.path = Path(f"{path}.inbox") if inbox else Path(path)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.synchronous = options.get("synchronous", "full").upper()
            if self.synchronous not in ("FULL", "NORMAL", "EXTRA"):
                raise StoreError(f"{url}: synchronous must be full, normal or extra")
        elif parsed.scheme in ("postgresql", "postgres"):
            self.dialect = "postgresql"
            try:
                import psycopg  # noqa: F401
            except ImportError as exc:
                raise StoreError(f"{url}: PostgreSQL needs psycopg (pip install 'resolver-identity[serve]')") from exc
        else:
            raise StoreError(f"{url}: unsupported store URL (sqlite:///PATH or postgresql://...)")
        self._local = threading.local()
        self._readers: list = []
        self._generation = 0
        self._readers_lock = threading.Lock()
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._writer: threading.Thread | None = None
        self._writer_conn = None
        self._closed = False
        # A hook, in the transaction of a write() (the CLI's): finish(tx) after its work; a failing
        # hook is skipped.
        self.finish: Callable[[Tx], None] | None = None
        conn = self._connect()
        try:
            self._schema(conn)
        finally:
            conn.close()

    # -- connections ---------------------------------------------------------------------------
    def _connect(self, synchronous: str | None = None):
        if self.dialect == "sqlite":
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={synchronous or self.synchronous}")
            conn.execute("PRAGMA busy_timeout=30000")
            return conn
        import psycopg

        try:
            return psycopg.connect(self.url, autocommit=True)
        except psycopg.OperationalError as exc:
            raise StoreError(f"cannot connect to the PostgreSQL store: {str(exc).splitlines()[0]}") from exc

    def _schema(self, conn) -> None:
        # SQLite: INTEGER PRIMARY KEY is the rowid, which counts up by itself.
        serial = "INTEGER" if self.dialect == "sqlite" else "BIGSERIAL"
        tx = Tx(conn, self.dialect)
        self._begin(conn)
        try:
            if self.dialect == "postgresql":  # one process creates the schema at a time
                conn.execute("SELECT pg_advisory_xact_lock(7281)")
            for statement in self.schema:
                tx.execute(statement.format(serial=serial))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _begin(self, conn) -> None:
        conn.execute("BEGIN IMMEDIATE" if self.dialect == "sqlite" else "BEGIN")

    def _reader(self):
        conn = getattr(self._local, "conn", None)
        if conn is None or getattr(self._local, "generation", None) != self._generation:
            conn = self._connect()  # first read on this thread, or the store was closed since
            self._local.conn, self._local.generation = conn, self._generation
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    def read(self, fn: Callable[[Tx], Any]) -> Any:
        """Run `fn` on this thread's read connection (a consistent snapshot)."""
        conn = self._reader()
        tx = Tx(conn, self.dialect)
        conn.execute("BEGIN")
        try:
            return fn(tx)
        finally:
            conn.execute("COMMIT")

    # -- writes ----------------------------------------------------------------------------------
    def write(self, fn: Callable[[Tx], Any]) -> Any:
        """Run `fn` in a transaction of its own, on the calling thread (no writer thread needed:
        the CLI and the startup import use this)."""
        conn = self._connect()
        try:
            self._begin(conn)
            try:
                tx = Tx(conn, self.dialect)
                result = fn(tx)
                self._hook(tx, self.finish)
                conn.execute("COMMIT")
                return result
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        finally:
            conn.close()

    def derived_connection(self):
        """A connection for the resolver's writes (derived from the inbox: its commits do not wait
        for the disk, on SQLite (synchronous=NORMAL) and on PostgreSQL (synchronous_commit=off,
        which can lose only the last commits, never make them inconsistent); see the module
        docstring)."""
        conn = self._connect("NORMAL" if self.dialect == "sqlite" else None)
        if self.dialect == "postgresql":
            conn.execute("SET synchronous_commit = off")
        return conn

    def transaction(self, conn, fn: Callable[[Tx], Any], pipelined: bool = False) -> Any:
        """Run `fn` in a transaction on `conn` (one of this store's connections): commit, or roll
        back and raise. `pipelined`: on PostgreSQL in pipeline mode (fewer round trips: see Tx)."""
        if pipelined and self.dialect == "postgresql":
            with conn.pipeline() as pipeline:
                return self._transaction(conn, fn, pipeline)
        return self._transaction(conn, fn, None)

    def _transaction(self, conn, fn: Callable[[Tx], Any], pipeline) -> Any:
        self._begin(conn)
        try:
            result = fn(Tx(conn, self.dialect, pipeline))
            conn.execute("COMMIT")
            if pipeline is not None:
                pipeline.sync()  # the commit's outcome, before anyone is told
            return result
        except BaseException:
            with contextlib.suppress(Exception):  # the connection may be gone
                if pipeline is not None:
                    pipeline.sync()  # an aborted pipeline takes no statement before a sync
            with contextlib.suppress(Exception):
                conn.execute("ROLLBACK")
            raise

    def _hook(self, tx: Tx, hook, *args) -> None:
        if hook is None:
            return
        try:
            with tx.savepoint():
                hook(tx, *args)
        except Exception as exc:  # noqa: BLE001 - hooks only speed up or tidy; the jobs stand alone
            log.error("store hook %s failed: %s", getattr(hook, "__name__", "hook"), type(exc).__name__)

    def submit(self, fn: Callable[[Tx], Any]) -> concurrent.futures.Future:
        """Queue `fn` for the writer thread; the future resolves once its transaction committed."""
        if self._closed:
            raise RuntimeError("the store is closed")
        if self._writer is None:
            self._writer_conn = self._connect()
            self._writer = threading.Thread(target=self._write_loop, name="resolver-store-writer", daemon=True)
            self._writer.start()
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._queue.put(_Job(fn, future))
        return future

    def _write_loop(self) -> None:
        conn = self._writer_conn
        while True:
            job = self._queue.get()
            if job is None:
                return
            jobs = [job]
            stop = False
            while len(jobs) < 256:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                jobs.append(more)
            self._run_group(conn, jobs)
            if stop:
                return

    def _run_group(self, conn, jobs: list[_Job]) -> None:
        def run(tx: Tx) -> list[tuple[_Job, Any, BaseException | None]]:
            results = []
            for job in jobs:
                try:
                    with tx.savepoint():
                        results.append((job, job.fn(tx), None))
                except Exception as exc:  # noqa: BLE001 - this job only: its savepoint is rolled back
                    results.append((job, None, exc))
            return results

        try:  # pipelined on PostgreSQL: a job that reads its result waits once (see Tx)
            results = self.transaction(conn, run, pipelined=True)
        except BaseException as exc:  # noqa: BLE001 - the commit failed: nobody is answered 2xx
            log.error("store commit failed: %s", type(exc).__name__)
            for job in jobs:
                _settle(job.future, None, exc)
            return
        for job, result, error in results:
            _settle(job.future, result, error)

    def close(self) -> None:
        self._closed = True
        if self._writer is not None:
            self._queue.put(None)
            self._writer.join(timeout=30)
            self._writer = None
        if self._writer_conn is not None:
            self._writer_conn.close()
            self._writer_conn = None
        with self._readers_lock:
            for conn in self._readers:
                with contextlib.suppress(Exception):  # another thread's connection
                    conn.close()
            self._readers.clear()
            self._generation += 1

    # -- small helpers -----------------------------------------------------------------------------
    def meta(self, key: str) -> str | None:
        row = self.read(lambda tx: tx.one("SELECT value FROM meta WHERE key = ?", (key,)))
        return row[0] if row else None


def _settle(future: concurrent.futures.Future, result: Any, error: BaseException | None) -> None:
    """Answer a job's future, unless its requester gave up waiting (a cancelled future: the client
    went away; what the job committed stays committed, it was just never acknowledged)."""
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
    except concurrent.futures.InvalidStateError:
        pass


def as_arrays(tx: Tx, parameters: int) -> bool:
    """Should a many-row statement pass one array per column instead of a parameter per value?
    On PostgreSQL beyond 50 parameters: psycopg converts such a statement anew each time (about a
    millisecond for a few hundred), while the array form's text does not grow with the rows (it
    keeps it, and the server keeps it prepared); below, the plain form costs less (no arrays to
    build)."""
    return tx.dialect == "postgresql" and parameters > 50


def insert_rows(tx: Tx, table: str, columns: str, rows: list[tuple], suffix: str = "") -> list[tuple]:
    """Insert text rows in order (a serial key follows it) with as few statements as can be, then
    `suffix` (ON CONFLICT ..., RETURNING ...); returns what RETURNING gives: one statement from
    arrays (as_arrays), or multi-row VALUES, 200 rows at a time."""
    if not rows:
        return []
    width = len(rows[0])
    if as_arrays(tx, len(rows) * width):
        arrays = ", ".join(["?::text[]"] * width)
        statements = [(f"INSERT INTO {table} ({columns}) SELECT * FROM unnest({arrays}) {suffix}",
                       [list(column) for column in zip(*rows)])]
    else:
        group = "(" + ", ".join("?" * width) + ")"
        statements = [(f"INSERT INTO {table} ({columns}) VALUES {', '.join([group] * len(part))} {suffix}",
                       [x for row in part for x in row]) for part in (rows[i:i + 200] for i in range(0, len(rows), 200))]
    out: list[tuple] = []
    for sql, params in statements:
        if "RETURNING" in suffix:
            out += tx.all(sql, params)
        else:
            tx.execute(sql, params)
    return out


def set_meta(tx: Tx, key: str, value: str) -> None:
    tx.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
               (key, value))


def default_store_url(state_dir: Path | None) -> str:
    if state_dir is None:
        raise StoreError("no store: give --store URL, sync.store in the config, or a state directory")
    return f"sqlite:///{(Path(state_dir) / 'sync.db').resolve()}"
