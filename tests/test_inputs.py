"""Inputs that public labelled data sets need (issue 19, item 3): records without identifiers, the
record key as an identifier, CSV null tokens, dates from year/month/day columns, attribute kinds
and the warning when normalization nulls most values, link-only and dedupe-only matching, over-cap
blocks refined by a finer key, and a record key of 0."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from resolver.cli import EXIT_INPUT, EXIT_OK, main
from resolver.config import attribute_kind, load_config

FIRST = ["anna", "bruno", "carla", "dieter", "emma", "felix", "greta", "hans", "ida", "jonas", "karla", "lukas",
         "mia", "noah", "olga", "paul", "quinn", "rosa", "sven", "tina", "ulla", "volker", "wanda", "xaver"]
LAST = ["meyer", "schulz", "becker", "wagner", "koch", "richter", "klein", "wolf", "neumann", "braun", "zimmer",
        "hartmann", "lange", "krause", "lehmann", "kaiser", "fuchs", "vogel", "jung", "roth", "frank", "berg",
        "haas", "otto"]


def _people(n: int) -> list[dict]:
    """n people with distinct names and birth dates (deterministic)."""
    return [{"first": FIRST[i % len(FIRST)], "last": LAST[(i * 7) % len(LAST)],
             "dob": f"{1950 + i % 40}-{1 + i % 12:02d}-{1 + (i * 5) % 28:02d}", "city": f"town{i % 9}"}
            for i in range(n)]


def _write_csv(path: Path, rows: list[dict]) -> None:
    pd.DataFrame(rows).to_csv(path, index=False)


def _config(tmp_path: Path, body: dict) -> Path:
    body = {"run": {"output_dir": "out", "workers": 1}, **body}
    path = tmp_path / "resolver.yaml"
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path


def _run(config: Path, *extra: str, quiet: bool = True) -> int:
    return main(["run", "--config", str(config), *(["-q"] if quiet else []), *extra])


def _identity_map(tmp_path: Path) -> pd.DataFrame:
    return pd.read_parquet(tmp_path / "out" / "identity_map.parquet")


def _summary(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "out" / "run_summary.json").read_text())


MATCHING = {
    "blocking": {"rules": [{"name": "surname", "keys": ["last_name"]}]},
    "comparisons": [
        {"name": "first_name", "column": "first_name", "method": "jaro_winkler", "thresholds": [0.92, 0.8]},
        {"name": "birth_date", "column": "birth_date", "method": "date", "years": [1]},
        {"name": "city", "column": "city", "method": "exact"},
    ],
}
ATTRIBUTES = {"first_name": "first", "last_name": "last", "birth_date": "dob", "city": "city"}


# ---------------------------------------------------------------------------------------------
# 1. A records source with no identifiers
# ---------------------------------------------------------------------------------------------
def _duplicated_people(tmp_path: Path, n_people: int = 40, twins: int = 20) -> list[dict]:
    """Every person once; the first `twins` of them twice (an exact copy under another key)."""
    people = _people(n_people)
    rows = [{"id": f"r{i}", **p} for i, p in enumerate(people)]
    rows += [{"id": f"d{i}", **people[i]} for i in range(twins)]
    _write_csv(tmp_path / "people.csv", rows)
    return rows


@pytest.mark.parametrize("identity", ["omitted", "empty types", "null"])
def test_a_records_source_without_identifiers_runs_and_matching_links_its_records(tmp_path, identity):
    rows = _duplicated_people(tmp_path)
    body = {"sources": [{"name": "people", "format": "csv", "path": "people.csv", "key": "id",
                         "attributes": ATTRIBUTES}], "matching": MATCHING}
    if identity == "empty types":
        body["identity"] = {"types": {}}
    elif identity == "null":
        body["identity"] = None
    assert _run(_config(tmp_path, body)) == EXIT_OK
    ids = _identity_map(tmp_path)
    assert len(ids) == len(rows) and _summary(tmp_path)["rows"]["accounted"]
    person = dict(zip(ids["record_key"], ids["person_id"]))
    # every copy is linked to its original by matching (there is nothing else to link them) ...
    assert all(person[f"d{i}"] == person[f"r{i}"] for i in range(20))
    assert set(ids.loc[ids["record_key"].str.startswith("d"), "linked_by"]) == {"probabilistic"}
    # ... and people who appear once stay alone
    assert ids["person_id"].nunique() == 40


def test_without_identifiers_or_matching_every_record_is_its_own_person(tmp_path):
    rows = _duplicated_people(tmp_path, n_people=10, twins=3)
    body = {"sources": [{"name": "people", "format": "csv", "path": "people.csv", "key": "id",
                         "attributes": ATTRIBUTES}], "identity": {"types": {}}}
    assert _run(_config(tmp_path, body)) == EXIT_OK
    ids = _identity_map(tmp_path)
    assert len(ids) == len(rows) == ids["person_id"].nunique()
    assert set(ids["linked_by"]) == {"singleton"}
    persons = pd.read_parquet(tmp_path / "out" / "persons.parquet")
    assert len(persons) == len(rows) and (persons["records"] == 1).all()


# ---------------------------------------------------------------------------------------------
# 2. The record key declared as an identifier
# ---------------------------------------------------------------------------------------------
def _key_identifier_config(tmp_path: Path, limit: int | None, matching: bool = True, where: str = "types") -> Path:
    _duplicated_people(tmp_path, n_people=10, twins=3)
    spec = {} if limit is None or where != "types" else {"limit": limit}
    body = {"sources": [{"name": "people", "format": "csv", "path": "people.csv", "key": "id",
                         "attributes": ATTRIBUTES, "identifiers": {"person_key": "id"}}],
            "identity": {"types": {"person_key": spec}}}
    if matching:
        body["matching"] = dict(MATCHING)
        if where == "link_limits":
            body["matching"]["link_limits"] = {"person_key": limit}
    return _config(tmp_path, body)


def test_a_key_identifier_with_limit_1_warns_once_naming_type_source_and_column(tmp_path, capsys):
    config = _key_identifier_config(tmp_path, limit=1)
    (warning,) = load_config(config).warnings()
    for part in ("'person_key'", "'people'", "'id'", "no two records of 'people' can ever be merged",
                 "remove `person_key: id`"):
        assert part in warning
    assert _run(config, quiet=False) == EXIT_OK
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "person_key" in line]
    assert len(lines) == 1 and lines[0].startswith("warning:")  # once, on one line, at load
    assert _summary(tmp_path)["warnings"] == [warning]
    # and it is what it says: the copies are not merged
    ids = _identity_map(tmp_path)
    assert ids["person_id"].nunique() == len(ids)


def test_a_key_identifier_through_matching_link_limits_warns_too(tmp_path):
    (warning,) = load_config(_key_identifier_config(tmp_path, limit=1, where="link_limits")).warnings()
    assert "matching.link_limits.person_key: 1" in warning


@pytest.mark.parametrize("limit, matching", [(None, True), (2, True), (1, False)])
def test_no_key_warning_without_limit_1_or_without_matching(tmp_path, limit, matching):
    assert load_config(_key_identifier_config(tmp_path, limit=limit, matching=matching)).warnings() == []


# ---------------------------------------------------------------------------------------------
# 3. CSV null tokens
# ---------------------------------------------------------------------------------------------
NULLS_CSV = (
    "id,first,last,dob,city\n"
    "1,anna,NA,1950-01-01,NULL\n"
    "2,  N/A ,meyer,\\N,town1\n"
    "3,NaN,None,#N/A,null\n"
    "NULL,bruno,koch,1960-02-02,town2\n"
    " NA ,carla,wolf,1970-03-03,town3\n"
    "6,Nathan,Nash,n/a,nan\n"
)


def _nulls_config(tmp_path: Path, csv_options: dict | None = None) -> Path:
    (tmp_path / "people.csv").write_text(NULLS_CSV)
    source = {"name": "people", "format": "csv", "path": "people.csv", "key": "id", "attributes": ATTRIBUTES}
    if csv_options is not None:
        source["csv"] = csv_options
    return _config(tmp_path, {"sources": [source]})


def test_csv_null_tokens_are_missing_values_and_a_null_key_is_rejected(tmp_path):
    assert _run(_nulls_config(tmp_path)) == EXIT_OK
    golden = pd.read_parquet(tmp_path / "out" / "golden_records.parquet")
    ids = _identity_map(tmp_path)
    assert sorted(ids["record_key"]) == ["1", "2", "3", "6"]
    by_key = golden.set_index(ids.set_index("person_id").loc[golden["person_id"], "record_key"].to_numpy())
    assert pd.isna(by_key.loc["1", "last_name"]) and pd.isna(by_key.loc["1", "city"])
    assert pd.isna(by_key.loc["2", "first_name"]) and pd.isna(by_key.loc["2", "birth_date"])
    assert by_key.loc["3", ["first_name", "last_name", "birth_date", "city"]].isna().all()
    assert (by_key.loc["6", "first_name"], by_key.loc["6", "last_name"]) == ("Nathan", "Nash")  # not tokens
    rejects = pd.read_parquet(tmp_path / "out" / "rejects.parquet")
    assert sorted(rejects["row"].tolist()) == [4, 5]
    assert set(rejects["field"]) == {"id"} and set(rejects["reason"]) == {"missing record key"}
    assert _summary(tmp_path)["rows"]["accounted"]


def test_csv_null_values_can_be_configured(tmp_path):
    assert _run(_nulls_config(tmp_path, {"null_values": ["NULL"]})) == EXIT_OK
    ids = _identity_map(tmp_path)
    assert sorted(ids["source_key"]) == ["1", "2", "3", "6", "NA"]  # " NA " is a key now (trimmed)
    golden = pd.read_parquet(tmp_path / "out" / "golden_records.parquet")
    assert "None" in set(golden["last_name"]) and "NA" in set(golden["last_name"])


def test_null_values_are_read_from_the_config_with_the_documented_default(tmp_path):
    config = load_config(_nulls_config(tmp_path))
    assert config.sources[0].csv.null_values == ["", "NA", "N/A", "n/a", "NULL", "null", "\\N", "NaN", "nan",
                                                 "None", "#N/A"]


# ---------------------------------------------------------------------------------------------
# 4. A date from year, month and day columns
# ---------------------------------------------------------------------------------------------
PARTS = [  # year, month, day, expected
    ("1956", "4", "9", "1956-04-09"), ("1956", "04", "09", "1956-04-09"), ("2000", "2", "29", "2000-02-29"),
    ("1999", "2", "29", None), ("1999", "13", "1", None), ("56", "1", "1", None), (None, "1", "1", None),
    ("1999", None, "1", None), ("x", "1", "1", None), (" 1987 ", " 12 ", " 31 ", "1987-12-31"),
]


def _parts_source(fmt: str, path: str) -> dict:
    return {"name": "people", "format": fmt, "path": path, "key": "id",
            "attributes": {"first_name": "first", "birth_date": {"year": "by", "month": "bm", "day": "bd"}}}


@pytest.mark.parametrize("fmt", ["csv", "parquet", "jsonl"])
def test_a_date_from_year_month_day_columns_through_every_reader(tmp_path, fmt):
    rows = [{"id": f"k{i}", "first": f"p{i}", "by": y, "bm": m, "bd": d} for i, (y, m, d, _) in enumerate(PARTS)]
    if fmt == "csv":
        pd.DataFrame(rows).to_csv(tmp_path / "people.csv", index=False)
    elif fmt == "parquet":  # numbers as numbers (a missing one makes the column float)
        frame = pd.DataFrame(rows)
        for column in ("by", "bm", "bd"):
            frame[column] = pd.to_numeric(frame[column].str.strip(), errors="coerce")
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), tmp_path / "people.parquet")
    else:  # JSON numbers where they are numbers
        def value(v):
            return int(v) if v is not None and v.strip().isdigit() else v

        (tmp_path / "people.jsonl").write_text(
            "\n".join(json.dumps({k: value(v) if k in ("by", "bm", "bd") else v for k, v in r.items()}) for r in rows))
    config = _config(tmp_path, {"sources": [_parts_source(fmt, f"people.{fmt}")]})
    assert set(load_config(config).sources[0].referenced_columns()) >= {"by", "bm", "bd"}
    assert _run(config) == EXIT_OK
    golden = pd.read_parquet(tmp_path / "out" / "golden_records.parquet")
    got = dict(zip(golden["first_name"], golden["birth_date"]))
    for i, (year, month, day, expected) in enumerate(PARTS):
        if fmt != "csv" and expected is None and year == "x":
            continue  # not a number: missing already in the numeric columns
        assert (got[f"p{i}"] if pd.notna(got[f"p{i}"]) else None) == expected, (fmt, year, month, day)


def test_the_sync_service_builds_date_part_attributes_as_the_batch_does(tmp_path):
    from resolver.sync.resolve import Resolver

    config = load_config(_config(tmp_path, {"sources": [_parts_source("csv", "people.csv")]}))
    resolver = Resolver(config, None)
    got = resolver._attributes(config.sources[0], {"first": "Ann", "by": "1956", "bm": "4", "bd": "9"}, {},
                               default_ts="2024-01-01T00:00:00Z")
    assert got["birth_date"][:2] == ("1956-04-09", "1956-04-09")
    got = resolver._attributes(config.sources[0], {"first": "Ann", "by": "1956", "bm": "2", "bd": "30"}, {})
    assert "birth_date" not in got and "first_name" in got


def test_date_parts_need_all_three_columns(tmp_path):
    body = {"sources": [{"name": "p", "format": "csv", "path": "p.csv", "key": "id",
                         "attributes": {"birth_date": {"year": "by", "month": "bm"}}}]}
    from resolver.config import ConfigError

    with pytest.raises(ConfigError, match="day"):
        load_config(_config(tmp_path, body))


def test_a_missing_date_part_column_is_an_input_error_naming_it(tmp_path, capsys):
    (tmp_path / "people.csv").write_text("id,first,by,bm\nk1,ann,1950,1\n")
    assert _run(_config(tmp_path, {"sources": [_parts_source("csv", "people.csv")]})) == EXIT_INPUT
    err = capsys.readouterr().err
    assert "'bd' not found" in err and "people.csv" in err


# ---------------------------------------------------------------------------------------------
# 5. Attribute kinds, and a warning when normalization nulls most values
# ---------------------------------------------------------------------------------------------
def test_year_like_attribute_names_are_numbers_not_dates():
    for name in ("birth_year", "yob", "year_of_birth", "YearOfBirth"):
        assert attribute_kind(name) == "number", name
    for name, kind in (("birth_date", "date"), ("dob", "date"), ("first_name", "name"), ("email", "email"),
                       ("mobile_phone", "phone"), ("postcode", "text"), ("latitude", "number")):
        assert attribute_kind(name) == kind


def _years_config(tmp_path: Path, normalizers: dict | None, n: int = 30) -> Path:
    people = _people(n)
    rows = [{"id": f"r{i}", "first": p["first"], "last": LAST[i % 5], "yob": p["dob"][:4]} for i, p in enumerate(people)]
    _write_csv(tmp_path / "people.csv", rows)
    matching = {"blocking": {"rules": [{"name": "surname", "keys": ["last_name"]}]},
                "comparisons": [{"name": "birth_year", "column": "birth_year", "method": "exact"},
                                {"name": "first_name", "column": "first_name", "method": "exact"}]}
    if normalizers is not None:
        matching["normalizers"] = normalizers
    return _config(tmp_path, {"sources": [{"name": "people", "format": "csv", "path": "people.csv", "key": "id",
                                           "attributes": {"first_name": "first", "last_name": "last",
                                                          "birth_year": "yob"}}], "matching": matching})


def test_birth_year_is_matched_as_a_number_by_default(tmp_path, capsys):
    assert _run(_years_config(tmp_path, None), quiet=False) == EXIT_OK
    summary = _summary(tmp_path)
    assert summary["attributes"]["birth_year"] == {"kind": "number", "kind_from": "name", "non_empty": 30, "nulled": 0}
    assert summary["warnings"] == []
    assert "normalized as" not in capsys.readouterr().err


def test_a_normalizer_that_nulls_most_values_warns_with_the_fix(tmp_path, capsys):
    assert _run(_years_config(tmp_path, {"birth_year": "date"}), quiet=False) == EXIT_OK
    summary = _summary(tmp_path)
    assert summary["attributes"]["birth_year"] == {"kind": "date", "kind_from": "matching.normalizers",
                                                   "non_empty": 30, "nulled": 30}
    (warning,) = summary["warnings"]
    for part in ("'birth_year'", "as date", "set in matching.normalizers", "100%", "30 non-empty",
                 "`matching.normalizers: {birth_year: number}`"):
        assert part in warning
    lines = [line for line in capsys.readouterr().err.splitlines() if "'birth_year' is normalized" in line]
    assert len(lines) == 1 and lines[0] == f"warning: {warning}"


def test_a_guessed_kind_that_nulls_most_values_says_it_was_guessed(tmp_path):
    people = _people(25)
    _write_csv(tmp_path / "people.csv", [{"id": i, "first": p["first"], "dob": "unknown" if i % 5 else p["dob"]}
                                         for i, p in enumerate(people)])
    config = _config(tmp_path, {"sources": [{"name": "people", "format": "csv", "path": "people.csv", "key": "id",
                                             "attributes": {"first_name": "first", "dob": "dob"}}]})
    assert _run(config) == EXIT_OK
    (warning,) = _summary(tmp_path)["warnings"]
    assert "'dob' is normalized as date (guessed from its name)" in warning and "80% of its 25" in warning


def test_few_values_or_a_minority_nulled_do_not_warn(tmp_path):
    assert _run(_years_config(tmp_path, {"birth_year": "date"}, n=19)) == EXIT_OK  # under 20 values
    assert _summary(tmp_path)["warnings"] == []


# ---------------------------------------------------------------------------------------------
# 8. A record key of 0
# ---------------------------------------------------------------------------------------------
def test_a_record_key_of_0_is_a_key_not_a_junk_value(tmp_path):
    (tmp_path / "crm.csv").write_text(
        "id,first,email,master\n"
        "0,ann,ann@x.com,\n"
        "1,ann,ann@x.com,\n"  # same email, another crm_id: limit 1 keeps them apart
        "2,bob,bob@y.com,0\n"  # merged into record 0
        "-1,cid,cid@z.com,\n"
    )
    body = {"sources": [{"name": "crm", "format": "csv", "path": "crm.csv", "key": "id",
                         "attributes": {"first_name": "first"},
                         "identifiers": {"crm_id": "id", "email": "email"},
                         "links": [{"column": "master", "type": "crm_id", "rule": "merge"}]}],
            "identity": {"types": {"crm_id": {"limit": 1, "priority": 1}, "email": {"normalizer": "email"}}}}
    assert _run(_config(tmp_path, body)) == EXIT_OK
    ids = _identity_map(tmp_path).set_index("record_key")
    assert sorted(ids.index) == ["-1", "0", "1", "2"]
    assert ids.loc["2", "person_id"] == ids.loc["0", "person_id"] and ids.loc["2", "linked_by"] == "merge"
    assert ids.loc["1", "person_id"] != ids.loc["0", "person_id"]  # the limit held: record 0 holds crm_id 0
    identifiers = pd.read_parquet(tmp_path / "out" / "identifier_map.parquet")
    assert {"0", "-1"} <= set(identifiers.loc[identifiers["id_type"] == "crm_id", "value"])
    actions = pd.read_parquet(tmp_path / "out" / "policy_actions.parquet")
    assert not ((actions["action"] == "blocked") & (actions["id_type"] == "crm_id")).any()
    assert (actions["action"] == "limit_cut").any()


def test_an_identifier_value_0_outside_the_key_is_still_blocked(tmp_path):
    (tmp_path / "crm.csv").write_text("id,first,ext\n1,ann,0\n2,bob,0\n")
    body = {"sources": [{"name": "crm", "format": "csv", "path": "crm.csv", "key": "id",
                         "attributes": {"first_name": "first"}, "identifiers": {"ext_id": "ext"}}],
            "identity": {"types": {"ext_id": {}}}}
    assert _run(_config(tmp_path, body)) == EXIT_OK
    assert _identity_map(tmp_path)["person_id"].nunique() == 2  # "0" links no one
    actions = pd.read_parquet(tmp_path / "out" / "policy_actions.parquet")
    assert ((actions["action"] == "blocked") & (actions["id_type"] == "ext_id")).sum() == 1
