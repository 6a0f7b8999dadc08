"""DuckDB in and out, and the outputs as a dbt source: resolver.duckdb holds every output table and
the current-persons views, a DuckDB table or query is a source like a file, `forget` leaves no row
of the person in the database, and dbt-core with dbt-duckdb runs the schema tests of dbt/ on it."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pandas as pd
import pytest
import yaml

from resolver.cli import EXIT_OK, main
from resolver.synth.people import generate

ROOT = Path(__file__).parent.parent


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The generated data resolved with run.duckdb on and a state (for forget)."""
    root = tmp_path_factory.mktemp("duck")
    generate(root, 400, seed=3, workers=1, events=False)
    config = yaml.safe_load((root / "resolver.yaml").read_text())
    config["run"]["duckdb"] = True
    (root / "duck.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    assert main(["run", "--config", str(root / "duck.yaml"), "--state", str(root / "state"), "-q"]) == EXIT_OK
    return root


def test_the_database_holds_every_output_table_and_the_current_views(world):
    out = world / "out"
    with duckdb.connect(str(out / "resolver.duckdb"), read_only=True) as db:
        names = {row[0] for row in db.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        for path in out.glob("*.parquet"):
            assert path.stem in names
            assert db.execute(f'SELECT count(*) FROM "{path.stem}"').fetchone()[0] == len(pd.read_parquet(path))
        assert {"current_persons", "current_golden_records"} <= names
        current = db.execute("SELECT count(*) FROM current_persons").fetchone()[0]
        live = db.execute("SELECT count(DISTINCT person_id) FROM identity_map WHERE status = 'active'").fetchone()[0]
        assert current == live > 0  # no events here: a current person holds a live record
        assert db.execute("SELECT count(*) FROM current_golden_records").fetchone()[0] == current


def test_a_duckdb_table_or_query_is_a_source_like_its_file(world, tmp_path):
    config = yaml.safe_load((world / "resolver.yaml").read_text())
    for source in config["sources"]:  # the configs below are written elsewhere
        source["path"] = str(world / source["path"])
    leads = config["sources"][1]
    assert leads["name"] == "sf_leads"
    frame = pd.read_csv(world / "salesforce" / "Lead.csv", dtype=str, keep_default_na=False)
    with duckdb.connect(str(tmp_path / "crm.duckdb")) as db:
        db.register("lead_file", frame)
        db.execute("CREATE TABLE leads AS SELECT * FROM lead_file")
    by_table = {**leads, "format": "duckdb", "path": str(tmp_path / "crm.duckdb"), "table": "leads"}
    by_query = {**by_table, "table": None, "query": "SELECT * FROM leads ORDER BY rowid"}
    outputs = {}
    for name, source in (("file", leads), ("table", by_table), ("query", by_query)):
        changed = {**config, "sources": [config["sources"][0], {k: v for k, v in source.items() if v is not None}]}
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(changed, sort_keys=False))
        assert main(["run", "--config", str(tmp_path / f"{name}.yaml"), "--out", str(tmp_path / name), "-q"]) == EXIT_OK
        outputs[name] = pd.read_parquet(tmp_path / name / "persons.parquet")
    pd.testing.assert_frame_equal(outputs["table"], outputs["file"])
    pd.testing.assert_frame_equal(outputs["query"], outputs["file"])
    broken = {**config, "sources": [config["sources"][0], {**by_table, "table": "nope"}]}
    (tmp_path / "broken.yaml").write_text(yaml.safe_dump(broken, sort_keys=False))
    assert main(["run", "--config", str(tmp_path / "broken.yaml"), "--out", str(tmp_path / "never"), "-q"]) == 3
    both = {**config, "sources": [config["sources"][0], {**by_table, "query": "SELECT 1"}]}
    (tmp_path / "both.yaml").write_text(yaml.safe_dump(both, sort_keys=False))
    assert main(["plan", "--config", str(tmp_path / "both.yaml"), "-q"]) == 2


def _dbt(duckdb_path: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "RESOLVER_DUCKDB": str(duckdb_path), "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
           "DBT_VERSION_CHECK": "false", "DBT_LOG_PATH": str(tmp_path / "logs"),
           "DBT_TARGET_PATH": str(tmp_path / "target")}
    project = tmp_path / "dbt"
    shutil.copytree(ROOT / "dbt", project)
    dbt = Path(sys.executable).parent / "dbt"
    return subprocess.run([str(dbt), "test", "--project-dir", str(project), "--profiles-dir", str(project)],
                          capture_output=True, text=True, env=env, timeout=300, check=False)


def test_dbt_schema_tests_pass_on_the_outputs_and_catch_a_broken_one(world, tmp_path):
    done = _dbt(world / "out" / "resolver.duckdb", tmp_path / "good")
    assert done.returncode == 0, done.stdout[-3000:]
    assert "PASS=" in done.stdout and "ERROR=0" in done.stdout
    broken = tmp_path / "broken.duckdb"
    shutil.copy(world / "out" / "resolver.duckdb", broken)
    with duckdb.connect(str(broken)) as db:  # a person twice, and a record of nobody
        db.execute("INSERT INTO persons SELECT * FROM persons LIMIT 1")
        db.execute("UPDATE identity_map SET person_id = 'p0000000000000000' WHERE record_id = 0")
    failed = _dbt(broken, tmp_path / "bad")
    assert failed.returncode != 0
    assert "unique_resolver_persons_person_id" in failed.stdout
    assert "relationships_resolver_identity_map_person_id" in failed.stdout


def test_forget_leaves_no_row_of_the_person_in_the_database(world):
    out = world / "out"
    with duckdb.connect(str(out / "resolver.duckdb"), read_only=True) as db:
        person, key = db.execute("SELECT person_id, record_key FROM identity_map WHERE status = 'active' "
                                 "ORDER BY record_id LIMIT 1").fetchone()
    assert main(["forget", "--config", str(world / "duck.yaml"), "--state", str(world / "state"),
                 "--person", person, "-q"]) == EXIT_OK
    with duckdb.connect(str(out / "resolver.duckdb"), read_only=True) as db:
        for table in ("identity_map", "persons", "golden_records", "current_persons"):
            assert db.execute(f"SELECT count(*) FROM {table} WHERE person_id = ?", [person]).fetchone()[0] == 0
        assert db.execute("SELECT count(*) FROM identity_map WHERE record_key = ?", [key]).fetchone()[0] == 0
