"""The outputs as one DuckDB database (`run.duckdb: true`): every output table, plus views of the
current persons and their golden records, for SQL, BI tools and dbt (dbt/ describes them as a dbt
source with schema tests).

The database is built from the Parquet files just written into the output folder's staging copy,
so it is swapped into place with them (atomic), and rebuilt the same way when `forget` rewrites
the outputs (an erased person leaves no row in it either).
"""

from __future__ import annotations

from pathlib import Path

from resolver.config import ConfigError

DUCKDB_FILE = "resolver.duckdb"

# Persons that hold a live record or events (a person all of whose records were deleted at the
# source is kept in the tables, for lineage, but is nobody now).
VIEWS = {
    "current_persons": """
        SELECT p.* FROM persons p
        WHERE p.events > 0 OR EXISTS (
            SELECT 1 FROM identity_map m WHERE m.person_id = p.person_id AND m.status = 'active')""",
    "current_golden_records": """
        SELECT g.* FROM golden_records g JOIN current_persons c USING (person_id)""",
}


def write_duckdb(folder: Path) -> Path:
    """(Re)build folder/resolver.duckdb from the folder's Parquet outputs; returns its path."""
    try:
        import duckdb
    except ImportError:
        raise ConfigError("run.duckdb needs DuckDB: pip install 'resolver-identity[duckdb]'") from None

    target = Path(folder) / DUCKDB_FILE
    target.unlink(missing_ok=True)
    tables = sorted(Path(folder).glob("*.parquet"))
    with duckdb.connect(str(target)) as db:
        for path in tables:
            db.execute(f'CREATE TABLE "{path.stem}" AS SELECT * FROM read_parquet(?)', [str(path)])
        names = {p.stem for p in tables}
        if {"persons", "identity_map"} <= names:
            db.execute(f"CREATE VIEW current_persons AS {VIEWS['current_persons']}")
            if "golden_records" in names:
                db.execute(f"CREATE VIEW current_golden_records AS {VIEWS['current_golden_records']}")
    return target
