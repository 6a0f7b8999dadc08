"""Erasure in the sync store: `resolver forget` removes the erased persons from the store `serve`
keeps (persons, identifiers, golden fields, records, blocking keys, change log, review and match
queues), blanks the payload of every accepted event that named them (the event id stays, so a
redelivery is still recognised and changes nothing) and drops their dead letters. A SQLite store
is then vacuumed and its write-ahead log truncated, so no freed page keeps the values. The erased
values' salted hashes (the tombstones) go into the store's `suppressed` table: a webhook that
carries one later does not bring the person back (resolve.py)."""

from __future__ import annotations

from pathlib import Path

from resolver.ids import to_signed
from resolver.sync.store import Store, Tx, now_iso, set_meta

ERASED_PAYLOAD = '{"erased": true}'
_CHUNK = 400  # values per IN (...) list


def store_url_for(config, state_dir: Path | None) -> str | None:
    """The sync store to erase from: the configured one, else the default SQLite file in the state
    directory when `serve` has created it."""
    if config.sync.store:
        return config.sync.store
    if state_dir is not None and (Path(state_dir) / "sync.db").exists():
        return f"sqlite:///{(Path(state_dir) / 'sync.db').resolve()}"
    return None


def _chunks(values: list[str]):
    for start in range(0, len(values), _CHUNK):
        yield values[start:start + _CHUNK]


def _ids_where(tx: Tx, sql: str, values: list[str]) -> set[str]:
    found: set[str] = set()
    for chunk in _chunks(values):
        marks = ",".join("?" * len(chunk))
        found |= {row[0] for row in tx.all(sql.format(marks=marks), chunk) if row[0] is not None}
    return found


def _delete(tx: Tx, table: str, conditions: list[tuple[str, list[str]]]) -> int:
    removed = 0
    for column, values in conditions:
        for chunk in _chunks(values):
            marks = ",".join("?" * len(chunk))
            removed += tx.execute(f"DELETE FROM {table} WHERE {column} IN ({marks})", chunk)
    return removed


def add_suppressed(tx: Tx, tombstones) -> int:
    """Record erased values' salted hashes (the state's tombstones: `kind`, `salted_hash` columns)
    in the store, so that `serve` never stores them again (resolve.py); returns how many are new."""
    before = tx.one("SELECT COUNT(*) FROM suppressed")[0]
    tx.executemany("INSERT INTO suppressed (salted_hash, kind) VALUES (?, ?) ON CONFLICT (salted_hash) DO NOTHING",
                   [(to_signed(int(h)), str(k)) for k, h in zip(tombstones["kind"], tombstones["salted_hash"])])
    added = tx.one("SELECT COUNT(*) FROM suppressed")[0] - before
    if added:
        set_meta(tx, "suppressed_version", now_iso())  # the running worker reloads them
    return added


def erase(store: Store, persons: set[str], values: set[str], tombstones=None) -> dict:
    """Remove what `persons` (ids) and `values` (erased emails, phones, record keys, as text) name,
    and suppress `tombstones` (their salted hashes) from now on; returns the rows touched per table."""
    wanted = sorted({v for v in values if v})
    lowered = sorted({v.strip().lower() for v in wanted})

    def work(tx: Tx) -> dict:
        suppressed = add_suppressed(tx, tombstones) if tombstones is not None and len(tombstones) else 0
        people = set(persons)
        people |= _ids_where(tx, "SELECT person_id FROM identifiers WHERE lower(value) IN ({marks})", lowered)
        people |= _ids_where(tx, "SELECT person_id FROM records WHERE record_key IN ({marks})", wanted)
        ids = sorted(people)
        counts = {
            "identifiers": _delete(tx, "identifiers", [("person_id", ids)]),
            "golden": _delete(tx, "golden", [("person_id", ids)]),
            "records": _delete(tx, "records", [("person_id", ids), ("record_key", wanted)]),
            "block_keys": _delete(tx, "block_keys", [("person_id", ids)]),
            "change_log": _delete(tx, "change_log", [("person_id", ids)]),
            "review_queue": _delete(tx, "review_queue", [("person_id", ids), ("candidate_id", ids),
                                                         ("record_key", wanted)]),
            "match_queue": _delete(tx, "match_queue", [("person_id", ids), ("record_key", wanted)]),
            "persons": _delete(tx, "persons", [("person_id", ids)]),
        }
        blanked = 0
        for chunk in _chunks(ids):
            marks = ",".join("?" * len(chunk))
            blanked += tx.execute(f"UPDATE events SET payload = ?, person_id = NULL, error = NULL "
                                  f"WHERE person_id IN ({marks})", [ERASED_PAYLOAD, *chunk])
        dead = 0
        for value in wanted:  # payloads are raw text: any that mentions an erased value
            pattern = _like(value)
            blanked += tx.execute("UPDATE events SET payload = ?, person_id = NULL, error = NULL "
                                  "WHERE lower(payload) LIKE lower(?) ESCAPE '\\'", [ERASED_PAYLOAD, pattern])
            dead += tx.execute("DELETE FROM dlq WHERE lower(payload) LIKE lower(?) ESCAPE '\\'", [pattern])
        counts["events_blanked"] = blanked
        counts["dead_letters"] = dead
        counts["persons_erased"] = len(ids)
        counts["suppressed"] = suppressed
        return counts

    counts = store.write(work)
    inbox = Store(store.url, inbox=True)  # the events as received: the same events are blanked there
    try:
        erased = [e for (e,) in store.read(lambda tx: tx.all("SELECT event_id FROM events WHERE payload = ?",
                                                              (ERASED_PAYLOAD,)))]

        def blank(tx: Tx) -> int:
            n = 0
            for chunk in _chunks(erased):
                marks = ",".join("?" * len(chunk))
                n += tx.execute(f"UPDATE inbox SET payload = ? WHERE payload <> ? AND event_id IN ({marks})",
                                [ERASED_PAYLOAD, ERASED_PAYLOAD, *chunk])
            for value in wanted:  # and any not taken in yet that mentions an erased value
                n += tx.execute("UPDATE inbox SET payload = ? WHERE lower(payload) LIKE lower(?) ESCAPE '\\'",
                                [ERASED_PAYLOAD, _like(value)])
            return n

        counts["inbox_blanked"] = inbox.write(blank)
    finally:
        inbox.close()
    for target in (store, inbox):
        if target.dialect == "sqlite":  # freed pages and the WAL would still hold the values
            conn = target._connect()
            try:
                conn.execute("VACUUM")
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                conn.close()
    return counts


def _like(value: str) -> str:
    """A LIKE pattern (escape character backslash) for text that contains `value`."""
    return "%" + value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
