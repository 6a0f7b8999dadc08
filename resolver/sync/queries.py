"""The SQL of resolution that is not a step: a chunk's reads at once (Known), the batched lookups
they are made of, change-log inserts and golden rows. Statements are written for both stores
(SQLite and PostgreSQL, see store.py): `?` placeholders, arrays where the store takes them.
"""

from __future__ import annotations

from resolver.sync.store import Tx, as_arrays, insert_rows


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


def holder_rows(tx: Tx, identifiers: list) -> list[tuple]:
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


def where_in(tx: Tx, sql: str, keys: list) -> list[tuple]:
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



def golden_rows(tx: Tx, persons: list[str]) -> dict[str, dict]:
    """person -> field -> value of the golden records of `persons` (500 per statement)."""
    golden: dict[str, dict] = {p: {} for p in persons}
    for start in range(0, len(persons), 500):
        chunk = persons[start:start + 500]
        marks = ", ".join("?" * len(chunk))
        for person, field, value in tx.all(f"SELECT person_id, field, value FROM golden WHERE person_id IN ({marks})",
                                           chunk):
            golden[person][field] = value
    return golden
