"""The Python API (resolver/api.py): tables in, tables out, a pair's waterfall, one record against a
state, the report inline, and its reference page in step with the docstrings."""

import doctest
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

import resolver
from resolver.synth.people import generate

HERE = Path(__file__).parent
ROOT = HERE.parent


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("api")
    generate(root, 400, seed=3, workers=1, events=False)
    config = resolver.load_config(root / "resolver.yaml")
    return root, config, resolver.resolve(config)


def _contacts(root: Path) -> pd.DataFrame:
    """The Contact files as one table (the second file's headers are upper case: the reader takes
    headers case-insensitively, pandas does not)."""
    parts = [pd.read_csv(f, dtype=str, keep_default_na=False) for f in sorted((root / "salesforce").glob("Contact*.csv"))]
    for part in parts[1:]:
        part.columns = parts[0].columns
    return pd.concat(parts, ignore_index=True)


def test_tables_passed_in_give_the_outputs_of_the_files(world):
    root, config, from_files = world
    contacts = _contacts(root)
    for table in (contacts, pa.Table.from_pandas(contacts, preserve_index=False)):
        result = resolver.resolve(config, data={"sf_contacts": table})
        assert result.tables.keys() == from_files.tables.keys()
        assert len(result.rejects) == len(from_files.rejects) == 0
        assert result.identity_map["person_id"].equals(from_files.identity_map["person_id"])
        pd.testing.assert_frame_equal(result.persons, from_files.persons)
        pd.testing.assert_frame_equal(result.golden_records, from_files.golden_records)
        contacts_files = result.identity_map.loc[result.identity_map["source"] == "sf_contacts", "file"]
        assert set(contacts_files.astype(str)) == {"data[sf_contacts]"}  # not a temporary file's path
    assert repr(from_files).startswith("<resolver.Result identity_map: ")


def test_bad_tables_and_configs_are_one_line_errors(world):
    root, config, _ = world
    with pytest.raises(resolver.ConfigError, match=r"data names sources the config does not have: \['crm'\]"):
        resolver.resolve(config, data={"crm": pd.DataFrame({"Id": ["1"]})})
    with pytest.raises(TypeError, match=r"data\['sf_contacts'\]: expected a pandas DataFrame or a pyarrow Table"):
        resolver.resolve(config, data={"sf_contacts": [{"Id": "1"}]})
    with pytest.raises(resolver.ConfigError, match="state_dir needs output_dir"):
        resolver.resolve(config, state_dir=root / "state")
    with pytest.raises(resolver.ConfigError, match="sources: Field required"):
        resolver.config_from_dict({"run": {}})
    raw = {"sources": [{"name": "web", "kind": "events", "format": "segment", "path": "x.jsonl",
                        "identifiers": {"user_id": "userId"}}],
           "identity": {"types": {"user_id": {}}}}
    events = resolver.config_from_dict(raw, base_dir=root)
    with pytest.raises(resolver.ConfigError, match="a table can stand in for a csv, parquet, jsonl, duckdb, postgresql source"):
        resolver.resolve(events, data={"web": pd.DataFrame({"userId": ["u1"]})})


def test_a_pairs_waterfall_adds_up_and_says_its_decision(world):
    _, config, result = world
    contact = _contacts(world[0]).iloc[3]
    a = {"first_name": contact["FirstName"], "last_name": contact["LastName"], "email": contact["Email"],
         "street": contact["MailingStreet"], "city": contact["MailingCity"],
         "postal_code": contact["MailingPostalCode"], "birth_date": contact["Birthdate"]}
    same = resolver.score_pair(config, result.model, a, a)
    assert same.candidate and same.decision == "link" and same.probability > 0.99
    total = same.prior_weight + same.comparisons["weight"].sum() + same.household_weight
    assert abs(total - same.match_weight) < 1e-9
    assert set(same.comparisons["level"]) <= {"exact", "null"}
    stranger = {"first_name": "Zebediah", "last_name": "Quintrell", "street": "1 Nowhere Lane", "city": "Anchorage",
                "postal_code": "99501", "birth_date": "1901-01-01", "email": "zq@example.org"}
    apart = resolver.score_pair(config, result.model.to_dict(), a, stranger)  # a model.json's dict does too
    assert not apart.candidate and apart.decision == "no_link" and apart.probability < 0.01
    assert "match weight" in str(apart) and "probability" in str(apart)


def test_one_record_finds_its_person_in_a_state_by_identifier_then_by_the_model(world, tmp_path):
    _, config, _ = world
    result = resolver.resolve(config, output_dir=tmp_path / "out", state_dir=tmp_path / "state")
    assert (tmp_path / "out" / "persons.parquet").exists() and (tmp_path / "out" / "report.html").exists()
    golden = result.golden_records.set_index("person_id")
    person = next(p for p, row in golden.iterrows() if isinstance(row["email"], str) and isinstance(row["street"], str)
                  and isinstance(row["birth_date"], str))
    row = golden.loc[person]
    record = {f: row[f] for f in ("first_name", "last_name", "street", "city", "postal_code", "birth_date")}
    by_id = resolver.best_match(config, tmp_path / "state", record, identifiers={"email": row["email"].upper()},
                                output_dir=tmp_path / "out")
    assert (by_id.person_id, by_id.how, by_id.decision) == (person, "identifier", "link")
    by_model = resolver.best_match(config, tmp_path / "state", record, output_dir=tmp_path / "out")
    assert (by_model.person_id, by_model.how, by_model.decision) == (person, "model", "link")
    assert by_model.golden["street"] == row["street"]
    nobody = {"first_name": "Zebediah", "last_name": "Quintrell", "postal_code": "99501"}
    assert resolver.best_match(config, tmp_path / "state", nobody, output_dir=tmp_path / "out") is None


def test_the_report_shows_inline_in_a_notebook(world):
    page = world[2]._repr_html_()
    assert page.startswith("<iframe srcdoc=\"") and "resolver run report" in page and "<script" not in page


def test_the_readme_examples_run_as_doctests(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    failures, tried = doctest.testfile(str(ROOT / "README.md"), module_relative=False,
                                       optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert tried >= 8 and failures == 0


def test_the_api_reference_is_generated_from_the_docstrings():
    proc = subprocess.run([sys.executable, str(ROOT / "docs" / "make_api_reference.py"), "--check"],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    text = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    for name in ("resolve", "score_pair", "best_match", "Result", "Waterfall", "Match", "config_from_dict"):
        assert f"resolver.{name}" in text
