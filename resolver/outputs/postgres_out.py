"""The outputs as PostgreSQL tables (`run.postgres`): every output table loaded with COPY into one
schema, plus the views current_persons and current_golden_records, all in one transaction, so a
reader sees the previous run's tables or this run's, never a mix. `forget` loads them again from
the rewritten outputs.
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from resolver.config import ConfigError
from resolver.outputs.duckdb_out import VIEWS

COPY_ROWS = 100_000  # rows turned into CSV at once (memory)


def postgres_url(url_env: str) -> str:
    url = os.environ.get(url_env)
    if not url:
        raise ConfigError(f"run.postgres: the environment variable {url_env} holds no PostgreSQL URL")
    return url


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _sql_type(kind: pa.DataType) -> str:
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    if pa.types.is_boolean(kind):
        return "boolean"
    if pa.types.is_uint64(kind):
        return "numeric(20, 0)"  # hashes: past bigint's range
    if pa.types.is_integer(kind):
        return "bigint"
    if pa.types.is_floating(kind):
        return "double precision"
    if pa.types.is_timestamp(kind):
        return "timestamptz" if kind.tz else "timestamp"
    return "text"


def _load(cursor, schema: str, path: Path) -> None:
    table = pq.read_table(path)
    name = f"{_ident(schema)}.{_ident(path.stem)}"
    columns = ", ".join(f"{_ident(f.name)} {_sql_type(f.type)}" for f in table.schema)
    cursor.execute(f"DROP TABLE IF EXISTS {name} CASCADE")
    cursor.execute(f"CREATE TABLE {name} ({columns})")
    with cursor.copy(f"COPY {name} FROM STDIN (FORMAT csv)") as copy:
        for start in range(0, table.num_rows, COPY_ROWS):
            frame = table.slice(start, COPY_ROWS).to_pandas()
            copy.write(frame.to_csv(index=False, header=False, date_format="%Y-%m-%d %H:%M:%S.%f"))


def write_postgres(folder: Path, url: str, schema: str) -> None:
    """Load folder's Parquet outputs into `schema` (replacing its tables) and make its views."""
    try:
        import psycopg
    except ImportError:
        raise ConfigError("run.postgres needs psycopg: pip install 'resolver-identity[serve]'") from None

    try:
        with psycopg.connect(url) as conn, conn.transaction(), conn.cursor() as cursor:
            cursor.execute(f"CREATE SCHEMA IF NOT EXISTS {_ident(schema)}")
            tables = sorted(Path(folder).glob("*.parquet"))
            for path in tables:
                _load(cursor, schema, path)
            names = {p.stem for p in tables}
            cursor.execute(f"SET LOCAL search_path TO {_ident(schema)}")
            if {"persons", "identity_map"} <= names:
                cursor.execute(f"CREATE OR REPLACE VIEW current_persons AS {VIEWS['current_persons']}")
                if "golden_records" in names:
                    cursor.execute(f"CREATE OR REPLACE VIEW current_golden_records AS "
                                   f"{VIEWS['current_golden_records']}")
    except psycopg.Error as exc:
        raise ConfigError(f"run.postgres: cannot load the outputs into schema {schema!r}: "
                          f"{str(exc).strip().splitlines()[0]}") from exc
