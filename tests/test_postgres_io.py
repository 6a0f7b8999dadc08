"""PostgreSQL as a source (a table or a query, exported with COPY) and as an output (every table
loaded with COPY in one transaction, with the current-persons views), against the real server CI
starts; `forget` reloads the tables without the person."""

import pandas as pd
import psycopg
import pytest
import yaml
from _sync_helpers import fresh_postgres_database, postgres_url

from resolver.cli import EXIT_INPUT, EXIT_OK, main
from resolver.synth.people import generate


@pytest.fixture(scope="module")
def database():
    url, drop = fresh_postgres_database(postgres_url())
    yield url
    drop()


@pytest.fixture(scope="module")
def world(tmp_path_factory, database):
    root = tmp_path_factory.mktemp("pgio")
    generate(root, 300, seed=8, workers=1, events=False)
    leads = pd.read_csv(root / "salesforce" / "Lead.csv", dtype=str, keep_default_na=False)
    with psycopg.connect(database) as conn, conn.cursor() as cursor:
        cursor.execute("CREATE SCHEMA crm")
        cursor.execute("CREATE TABLE crm.leads (" + ", ".join(f'"{c}" text' for c in leads.columns) + ")")
        with cursor.copy("COPY crm.leads FROM STDIN (FORMAT csv)") as copy:
            copy.write(leads.to_csv(index=False, header=False))
    return root


def _config(root, tmp_path, name: str, lead_source: dict, **run) -> str:
    config = yaml.safe_load((root / "resolver.yaml").read_text())
    for source in config["sources"]:
        source["path"] = str(root / source["path"])
    config["sources"][1] = {**{k: v for k, v in config["sources"][1].items() if k not in ("path", "format", "csv")},
                            **lead_source}
    config["run"].update(run)
    (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return str(tmp_path / f"{name}.yaml")


def test_a_table_or_a_query_is_a_source_and_the_outputs_load_into_a_schema(world, database, tmp_path, monkeypatch):
    monkeypatch.setenv("CRM_URL", database)
    monkeypatch.setenv("RESOLVER_POSTGRES_URL", database)
    assert main(["run", "--config", str(world / "resolver.yaml"), "--out", str(tmp_path / "files"), "-q"]) == EXIT_OK
    expected = pd.read_parquet(tmp_path / "files" / "persons.parquet")
    by_table = _config(world, tmp_path, "table", {"format": "postgresql", "path": "env:CRM_URL", "table": "crm.leads"},
                       postgres={"db_schema": "identity"})
    assert main(["run", "--config", by_table, "--out", str(tmp_path / "table"), "--state", str(tmp_path / "state"),
                 "-q"]) == EXIT_OK
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "table" / "persons.parquet"), expected)
    files = set(pd.read_parquet(tmp_path / "table" / "identity_map.parquet", columns=["file"])["file"].astype(str))
    assert "postgresql:sf_leads:crm.leads" in files  # the rows name their table, not the cached export
    by_query = _config(world, tmp_path, "query", {"format": "postgresql", "path": database,
                                                  "query": 'SELECT * FROM crm.leads ORDER BY "Id"'})
    assert main(["run", "--config", by_query, "--out", str(tmp_path / "query"), "-q"]) == EXIT_OK
    assert len(pd.read_parquet(tmp_path / "query" / "persons.parquet")) == len(expected)

    with psycopg.connect(database) as conn:
        loaded = pd.DataFrame(conn.execute("SELECT person_id, records FROM identity.persons ORDER BY person_id").fetchall(),
                              columns=["person_id", "records"])
        assert loaded.equals(expected[["person_id", "records"]].sort_values("person_id").reset_index(drop=True))
        identity = conn.execute("SELECT count(*) FROM identity.identity_map").fetchone()[0]
        assert identity == len(pd.read_parquet(tmp_path / "table" / "identity_map.parquet"))
        current = conn.execute("SELECT count(*) FROM identity.current_persons").fetchone()[0]
        golden = conn.execute("SELECT count(*) FROM identity.current_golden_records").fetchone()[0]
        assert current == golden > 0
        hashes = conn.execute("SELECT min(hash), max(hash) FROM identity.identifier_map").fetchone()
        assert hashes[1] > 2**63  # uint64 hashes kept whole (numeric), not wrapped
        person = conn.execute("SELECT person_id FROM identity.persons ORDER BY person_id LIMIT 1").fetchone()[0]

    assert main(["forget", "--config", by_table, "--state", str(tmp_path / "state"), "--out", str(tmp_path / "table"),
                 "--person", person, "-q"]) == EXIT_OK
    with psycopg.connect(database) as conn:
        for table in ("persons", "identity_map", "golden_records", "current_persons"):
            assert conn.execute(f"SELECT count(*) FROM identity.{table} WHERE person_id = %s",
                                (person,)).fetchone()[0] == 0


def test_a_bad_query_is_a_one_line_input_error(world, database, tmp_path, capsys):
    broken = _config(world, tmp_path, "broken", {"format": "postgresql", "path": database,
                                                 "query": "SELECT * FROM crm.no_such_table"})
    assert main(["run", "--config", broken, "--out", str(tmp_path / "never"), "-q"]) == EXIT_INPUT
    err = capsys.readouterr().err.strip()
    assert err.startswith("input error: source 'sf_leads': cannot read from PostgreSQL:") and "no_such_table" in err
    assert len(err.splitlines()) == 1
