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
from hypothesis import given, settings
from hypothesis import strategies as st

from resolver.matching.blocking import (
    BlockingKeys,
    PairScope,
    build_blocking_keys,
    candidate_pairs,
    pair_scope,
    rule_pairs_of,
    rule_pairs_xp,
)
from resolver.cli import EXIT_INPUT, EXIT_OK, EXIT_UNHEALTHY_MODEL, main
from resolver.config import BlockingConfig, BlockingRule, attribute_kind, load_config

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


@pytest.mark.slow
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


@pytest.mark.slow
def test_without_identifiers_the_person_size_guard_cuts_probabilistic_links(tmp_path):
    # one person written 8 times among 30 others: matching links the 8, max_person_records keeps 5
    people = _people(30)
    rows = [{"id": f"r{i}", **p} for i, p in enumerate(people)] + [{"id": f"c{i}", **people[0]} for i in range(7)]
    _write_csv(tmp_path / "people.csv", rows)
    body = {"sources": [{"name": "people", "format": "csv", "path": "people.csv", "key": "id",
                         "attributes": ATTRIBUTES}], "identity": {"types": {}},
            "matching": {**MATCHING, "max_person_records": 5}}
    assert _run(_config(tmp_path, body)) == EXIT_OK
    ids = _identity_map(tmp_path)
    assert ids.groupby("person_id").size().max() == 5
    actions = pd.read_parquet(tmp_path / "out" / "policy_actions.parquet")
    assert (actions["action"] == "limit_cut").any()
    assert actions.loc[actions["action"] == "limit_cut", "reason"].str.contains("more than the allowed records").all()


@pytest.mark.slow
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


@pytest.mark.slow
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


def test_no_key_warning_for_a_crm_whose_one_record_per_person_is_deliberate(tmp_path):
    config = load_config(_key_identifier_config(tmp_path, limit=1))
    config.sources[0].system = "salesforce"  # sf_contact_id: Id with limit 1, one Contact per person
    assert config.warnings() == []


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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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
    got = resolver.mapping.attributes(config.sources[0], {"first": "Ann", "by": "1956", "bm": "4", "bd": "9"}, {},
                               default_ts="2024-01-01T00:00:00Z")
    assert got["birth_date"][:2] == ("1956-04-09", "1956-04-09")
    got = resolver.mapping.attributes(config.sources[0], {"first": "Ann", "by": "1956", "bm": "2", "bd": "30"}, {})
    assert "birth_date" not in got and "first_name" in got


def test_date_parts_need_all_three_columns(tmp_path):
    body = {"sources": [{"name": "p", "format": "csv", "path": "p.csv", "key": "id",
                         "attributes": {"birth_date": {"year": "by", "month": "bm"}}}]}
    from resolver.config import ConfigError

    with pytest.raises(ConfigError, match="day"):
        load_config(_config(tmp_path, body))


@pytest.mark.slow
def test_a_missing_date_part_column_is_an_input_error_naming_it(tmp_path, capsys):
    (tmp_path / "people.csv").write_text("id,first,by,bm\nk1,ann,1950,1\n")
    assert _run(_config(tmp_path, {"sources": [_parts_source("csv", "people.csv")]})) == EXIT_INPUT
    err = capsys.readouterr().err
    assert "'bd' not found" in err and "people.csv" in err


@pytest.mark.slow
def test_joined_columns_make_one_attribute_in_batch_and_sync(tmp_path):
    from resolver.sync.resolve import Resolver

    frame = pd.DataFrame({"id": ["a", "b", "c", "d"], "first": ["p0", "p1", "p2", "p3"],
                          "number": [12, None, None, 7], "street": ["Main St", "Oak Ave", None, " "],
                          "unit": [None, "apt 4", None, "x"]})
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), tmp_path / "people.parquet")
    source = {"name": "people", "format": "parquet", "path": "people.parquet", "key": "id",
              "attributes": {"first_name": "first", "address": {"join": ["number", "street", "unit"]}}}
    config = _config(tmp_path, {"sources": [source]})
    assert {"number", "street", "unit"} <= set(load_config(config).sources[0].referenced_columns())
    assert _run(config) == EXIT_OK
    golden = pd.read_parquet(tmp_path / "out" / "golden_records.parquet")
    got = {k: (v if pd.notna(v) else None) for k, v in zip(golden["first_name"], golden["address"])}
    assert got == {"p0": "12 Main St", "p1": "Oak Ave apt 4", "p2": None, "p3": "7 x"}  # golden: as written
    loaded = load_config(config)
    resolver = Resolver(loaded, None)
    row = {"first": "Ann", "number": "12", "street": "Main St", "unit": None}
    assert resolver.mapping.attributes(loaded.sources[0], row, {})["address"][0] == "12 Main St"


def test_a_join_needs_two_columns(tmp_path):
    from resolver.config import ConfigError

    body = {"sources": [{"name": "p", "format": "csv", "path": "p.csv", "key": "id",
                         "attributes": {"address": {"join": ["street"]}}}]}
    with pytest.raises(ConfigError, match="join"):
        load_config(_config(tmp_path, body))


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
    rows = [{"id": f"r{i}{copy}", "first": p["first"], "last": LAST[i % 5], "yob": p["dob"][:4]}
            for i, p in enumerate(people) for copy in "ab"]  # every person twice: matching has matches to learn
    _write_csv(tmp_path / "people.csv", rows)
    matching = {"blocking": {"rules": [{"name": "surname", "keys": ["last_name"]}]},
                "comparisons": [{"name": "birth_year", "column": "birth_year", "method": "exact"},
                                {"name": "first_name", "column": "first_name", "method": "exact"}]}
    if normalizers is not None:
        matching["normalizers"] = normalizers
    return _config(tmp_path, {"sources": [{"name": "people", "format": "csv", "path": "people.csv", "key": "id",
                                           "attributes": {"first_name": "first", "last_name": "last",
                                                          "birth_year": "yob"}}], "matching": matching})


@pytest.mark.slow
def test_birth_year_is_matched_as_a_number_by_default(tmp_path, capsys):
    assert _run(_years_config(tmp_path, None), quiet=False) == EXIT_OK
    summary = _summary(tmp_path)
    assert summary["attributes"]["birth_year"] == {"kind": "number", "kind_from": "name", "non_empty": 60, "nulled": 0}
    assert summary["warnings"] == []
    assert "normalized as" not in capsys.readouterr().err


@pytest.mark.slow
def test_a_normalizer_that_nulls_most_values_warns_with_the_fix(tmp_path, capsys):
    # a comparison of a column the normalizer emptied cannot be learned: the model fails its health check
    assert _run(_years_config(tmp_path, {"birth_year": "date"}), quiet=False) == EXIT_UNHEALTHY_MODEL
    summary = _summary(tmp_path)
    assert summary["attributes"]["birth_year"] == {"kind": "date", "kind_from": "matching.normalizers",
                                                   "non_empty": 60, "nulled": 60}
    assert any("'birth_year': no sampled pair" in p for p in summary["matching"]["model_health"]["problems"])
    (warning,) = summary["warnings"]
    for part in ("'birth_year'", "as date", "set in matching.normalizers", "100%", "60 non-empty",
                 "`matching.normalizers: {birth_year: number}`"):
        assert part in warning
    lines = [line for line in capsys.readouterr().err.splitlines() if "'birth_year' is normalized" in line]
    assert len(lines) == 1 and lines[0] == f"warning: {warning}"
    assert "set in matching.normalizers" in (tmp_path / "out" / "report.html").read_text()


@pytest.mark.slow
def test_a_guessed_kind_that_nulls_most_values_says_it_was_guessed(tmp_path):
    people = _people(25)
    _write_csv(tmp_path / "people.csv", [{"id": i, "first": p["first"], "dob": "unknown" if i % 5 else p["dob"]}
                                         for i, p in enumerate(people)])
    config = _config(tmp_path, {"sources": [{"name": "people", "format": "csv", "path": "people.csv", "key": "id",
                                             "attributes": {"first_name": "first", "dob": "dob"}}]})
    assert _run(config) == EXIT_OK
    (warning,) = _summary(tmp_path)["warnings"]
    assert "'dob' is normalized as date (guessed from its name)" in warning and "80% of its 25" in warning


@pytest.mark.slow
def test_few_values_or_a_minority_nulled_do_not_warn(tmp_path):
    # 18 values (9 people twice): too few to warn; the emptied comparison still fails the health check
    assert _run(_years_config(tmp_path, {"birth_year": "date"}, n=9)) == EXIT_UNHEALTHY_MODEL
    assert _summary(tmp_path)["warnings"] == []


# ---------------------------------------------------------------------------------------------
# 8. A record key of 0
# ---------------------------------------------------------------------------------------------
@pytest.mark.slow
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


@pytest.mark.slow
def test_an_identifier_value_0_outside_the_key_is_still_blocked(tmp_path):
    (tmp_path / "crm.csv").write_text("id,first,ext\n1,ann,0\n2,bob,0\n")
    body = {"sources": [{"name": "crm", "format": "csv", "path": "crm.csv", "key": "id",
                         "attributes": {"first_name": "first"}, "identifiers": {"ext_id": "ext"}}],
            "identity": {"types": {"ext_id": {}}}}
    assert _run(_config(tmp_path, body)) == EXIT_OK
    assert _identity_map(tmp_path)["person_id"].nunique() == 2  # "0" links no one
    actions = pd.read_parquet(tmp_path / "out" / "policy_actions.parquet")
    assert ((actions["action"] == "blocked") & (actions["id_type"] == "ext_id")).sum() == 1


# ---------------------------------------------------------------------------------------------
# 6. link_only / dedupe_only
# ---------------------------------------------------------------------------------------------
def _two_sources(tmp_path: Path, link_type: str | None, **matching) -> Path:
    """Source a: people 0-19, people 0-4 twice; source b: people 10-29, people 25-29 twice. People
    10-19 are in both."""
    people = [{**p, "last": LAST[i % 6]} for i, p in enumerate(_people(30))]  # namesakes: non-matches to block
    a = [{"id": f"a{i}", **people[i]} for i in range(20)] + [{"id": f"a{i}x", **people[i]} for i in range(5)]
    b = [{"id": f"b{i}", **people[i]} for i in range(10, 30)] + [{"id": f"b{i}x", **people[i]} for i in range(25, 30)]
    _write_csv(tmp_path / "a.csv", a)
    _write_csv(tmp_path / "b.csv", b)
    spec = {**MATCHING, **matching}
    if link_type is not None:
        spec["link_type"] = link_type
    return _config(tmp_path, {"sources": [{"name": s, "format": "csv", "path": f"{s}.csv", "key": "id",
                                           "attributes": ATTRIBUTES} for s in ("a", "b")], "matching": spec})


def _pairs_made(tmp_path: Path) -> pd.DataFrame:
    ids = _identity_map(tmp_path)
    scored = pd.read_parquet(tmp_path / "out" / "scored_pairs.parquet")
    source = ids.set_index("record_id")["source"].astype(str)
    return pd.DataFrame({"l": source.loc[scored["record_id_l"]].to_numpy(),
                         "r": source.loc[scored["record_id_r"]].to_numpy()})


def _same(ids: pd.DataFrame, x: str, y: str) -> bool:
    person = dict(zip(ids["record_key"], ids["person_id"]))
    return person[x] == person[y]


@pytest.mark.slow
@pytest.mark.parametrize("stream", [False, True])
def test_link_only_makes_pairs_only_between_sources(tmp_path, stream):
    extra = {"stream_above_pairs": 0} if stream else {}  # 0: pairs made bucket by bucket (resolver/matching/pairs.py)
    assert _run(_two_sources(tmp_path, "link_only", **extra)) == EXIT_OK
    summary = _summary(tmp_path)
    assert ("streamed" in summary["matching"]) == stream and summary["matching"]["link_type"] == "link_only"
    made = _pairs_made(tmp_path)
    assert len(made) and (made["l"] != made["r"]).all()
    ids = _identity_map(tmp_path)
    assert all(_same(ids, f"a{i}", f"b{i}") for i in range(10, 20))  # the same people across sources
    assert not any(_same(ids, f"a{i}", f"a{i}x") for i in range(5))  # never within one
    assert not any(_same(ids, f"b{i}", f"b{i}x") for i in range(25, 30))
    # every candidate pair the blocks allow: cross-source pairs of one surname only
    plan = summary["matching"]["blocking_plan"][0]
    assert summary["matching"]["candidate_pairs"] == plan["pairs_in_blocks"] == _allowed_pairs(tmp_path, "link_only")


@pytest.mark.slow
@pytest.mark.parametrize("stream", [False, True])
def test_dedupe_only_makes_pairs_only_within_a_source(tmp_path, stream):
    extra = {"stream_above_pairs": 0} if stream else {}
    assert _run(_two_sources(tmp_path, "dedupe_only", **extra)) == EXIT_OK
    made = _pairs_made(tmp_path)
    assert len(made) and (made["l"] == made["r"]).all()
    ids = _identity_map(tmp_path)
    assert all(_same(ids, f"a{i}", f"a{i}x") for i in range(5))
    assert not any(_same(ids, f"a{i}", f"b{i}") for i in range(10, 20))
    assert _summary(tmp_path)["matching"]["candidate_pairs"] == _allowed_pairs(tmp_path, "dedupe_only")


@pytest.mark.slow
def test_link_and_dedupe_is_the_default_and_makes_both(tmp_path):
    assert _run(_two_sources(tmp_path, None)) == EXIT_OK
    made = _pairs_made(tmp_path)
    assert (made["l"] == made["r"]).any() and (made["l"] != made["r"]).any()
    ids = _identity_map(tmp_path)
    assert _same(ids, "a0", "a0x") and _same(ids, "a10", "b10")
    assert _summary(tmp_path)["matching"]["candidate_pairs"] == _allowed_pairs(tmp_path, "link_and_dedupe")


def _allowed_pairs(tmp_path: Path, link_type: str) -> int:
    """Brute force: pairs of records with one surname that the link type allows."""
    rows = pd.concat([pd.read_csv(tmp_path / f"{s}.csv").assign(source=s) for s in ("a", "b")], ignore_index=True)
    count = 0
    for i in range(len(rows)):
        for j in range(i + 1, len(rows)):
            if rows["last"][i] != rows["last"][j]:
                continue
            same = rows["source"][i] == rows["source"][j]
            count += {"link_and_dedupe": True, "link_only": not same, "dedupe_only": same}[link_type]
    return count


def test_link_only_needs_two_records_sources(tmp_path):
    from resolver.config import ConfigError

    _duplicated_people(tmp_path)
    body = {"sources": [{"name": "people", "format": "csv", "path": "people.csv", "key": "id",
                         "attributes": ATTRIBUTES}], "matching": {**MATCHING, "link_type": "link_only"}}
    with pytest.raises(ConfigError, match="link_only .* only one records source"):
        load_config(_config(tmp_path, body))


@pytest.mark.slow
def test_link_only_on_the_dask_engine_gives_the_local_engines_pairs(tmp_path):
    pytest.importorskip("distributed")
    config = _two_sources(tmp_path, "link_only")
    assert _run(config) == EXIT_OK
    local = pd.read_parquet(tmp_path / "out" / "scored_pairs.parquet")
    assert main(["run", "--config", str(config), "-q", "--out", str(tmp_path / "dask"), "--engine", "dask",
                 "--workers", "1", "--backend", "cpu"]) == EXIT_OK
    on_dask = pd.read_parquet(tmp_path / "dask" / "scored_pairs.parquet")
    pd.testing.assert_frame_equal(local[["record_id_l", "record_id_r", "rule"]],
                                  on_dask[["record_id_l", "record_id_r", "rule"]])
    assert len(_pairs_made(tmp_path)) == len(on_dask)


def test_the_dask_engines_bucketed_pairs_keep_the_scope():
    from resolver.compute.engine import LOCAL
    from resolver.config import ComparisonConfig
    from resolver.matching.compare import prepare
    from resolver.matching.pairs import pairs_in_buckets

    rng = np.random.default_rng(3)
    keys = rng.integers(0, 6, size=(2, 120)).astype(np.uint64)
    labels = np.arange(120)
    groups = rng.integers(0, 3, size=120)
    prepared = [prepare(ComparisonConfig(name="c", column="c", method="exact"),
                        {"c": pd.Series(rng.choice(["a", "b"], size=120), dtype="str")})]
    for link_type in ("link_only", "dedupe_only"):
        scope = PairScope(link_type, groups)
        pairs, _, _ = pairs_in_buckets(LOCAL, keys, labels, prepared, 3, scope)  # the tasks run in this process
        held = candidate_pairs(BlockingKeys(["r0", "r1"], keys, []), labels, scope=scope)
        assert [x.tolist() for x in (pairs.left, pairs.right, pairs.rule)] == \
            [x.tolist() for x in (held.left, held.right, held.rule)]
        same = groups[pairs.left] == groups[pairs.right]
        assert len(same) and (same.all() if link_type == "dedupe_only" else not same.any())


@pytest.mark.slow
@settings(max_examples=60, deadline=None)
@given(data=st.data(), n=st.integers(2, 40), cap=st.integers(2, 9),
       link_type=st.sampled_from(["link_and_dedupe", "link_only", "dedupe_only"]))
def test_scoped_pairs_and_counts_equal_brute_force_on_every_path(data, n, cap, link_type):
    first = data.draw(st.lists(st.sampled_from(["a", "b", "c", None]), min_size=n, max_size=n))
    second = data.draw(st.lists(st.sampled_from(["x", "y", None]), min_size=n, max_size=n))
    labels = np.array(data.draw(st.lists(st.integers(0, n), min_size=n, max_size=n)))
    sources = pd.Series(data.draw(st.lists(st.sampled_from(["s1", "s2", "s3"]), min_size=n, max_size=n)))
    attrs = {"f": pd.Series(first, dtype="str"), "s": pd.Series(second, dtype="str")}
    config = BlockingConfig(max_block_size=cap, rules=[BlockingRule(name="fs", keys=["f", "s"], refine=[]),
                                                       BlockingRule(name="f", keys=["f"], refine=["s"])])
    scope = pair_scope(link_type, sources)
    assert (scope is None) == (link_type == "link_and_dedupe")
    keys = build_blocking_keys(config, attrs, np.ones(n, bool), scope=scope)
    pairs = candidate_pairs(keys, labels, scope=scope)

    def allowed(i, j):
        same = sources[i] == sources[j]
        return {"link_and_dedupe": True, "link_only": not same, "dedupe_only": same}[link_type]

    got = {(int(i), int(j)): int(r) for i, j, r in zip(pairs.left, pairs.right, pairs.rule)}
    assert len(got) == len(pairs)
    expected, seen = {}, set()
    for r in range(2):
        k = keys.keys[r]
        in_blocks = [(i, j) for i in range(n) for j in range(i + 1, n) if k[i] != 0 and k[i] == k[j]]
        assert keys.plans[r].pairs == sum(allowed(i, j) for i, j in in_blocks)
        for i, j in in_blocks:
            if (i, j) not in seen:
                seen.add((i, j))
                if labels[i] != labels[j] and allowed(i, j):
                    expected[(i, j)] = r
    assert got == expected
    # the array path and the bucketed path make the same pairs in the same order
    for r in range(2):
        left, right = rule_pairs_of(keys.keys, r, labels, scope)
        xl, xr = rule_pairs_xp(np, keys.keys, r, labels, chunk=7, scope=scope)
        assert left.tolist() == xl.tolist() and right.tolist() == xr.tolist()


def test_random_pairs_sample_only_allowed_pairs_uniformly():
    from collections import Counter

    from resolver.matching.model import random_pairs

    groups = np.array([0, 0, 0, 1, 1, 2, 0, 1])
    active = np.ones(8, bool)
    active[7] = False
    a, b = random_pairs(active, 56_000, seed=1, groups=groups, link_type="link_only")
    assert len(a) == 56_000 and (groups[a] != groups[b]).all() and active[a].all() and active[b].all()
    counts = Counter(zip(a.tolist(), b.tolist()))
    assert len(counts) == 28  # ordered pairs across groups among the 7 active records
    assert max(counts.values()) < 1.2 * 2000 and min(counts.values()) > 0.8 * 2000
    a, b = random_pairs(active, 14_000, seed=1, groups=groups, link_type="dedupe_only")
    assert (groups[a] == groups[b]).all() and (a != b).all()
    assert len(Counter(zip(a.tolist(), b.tolist()))) == 14  # 4*3 + 2*1 ordered pairs within groups
    none = random_pairs(active, 10, seed=1, groups=np.zeros(8, int), link_type="link_only")
    assert len(none[0]) == 0
    # without groups, or with link_and_dedupe, the sample is the one it always was
    plain = random_pairs(active, 500, seed=4)
    same = random_pairs(active, 500, seed=4, groups=groups, link_type="link_and_dedupe")
    assert all(np.array_equal(x, y) for x, y in zip(plain, same))


# ---------------------------------------------------------------------------------------------
# 7. An over-cap block re-blocked with a finer key
# ---------------------------------------------------------------------------------------------
def _smiths(n: int = 600, johns: int = 0) -> tuple[dict[str, pd.Series], list[tuple[int, int]]]:
    """n records sharing the surname smith; records 2k and 2k+1 (k < 50) are one person (same first
    name and birth date); `johns` further records share the first name john (and 20 birth dates).
    Three records have no first name."""
    rng = np.random.default_rng(5)
    first = [f"name{i // 2}" if i < 100 else f"other{i}" for i in range(n)]
    dob = [f"19{50 + (i // 2) % 40}-01-{1 + (i // 2) % 28:02d}" if i < 100 else f"{1900 + i % 100}-02-{1 + i % 28:02d}"
           for i in range(n)]
    for i in range(100, 100 + johns):  # the johns share 20 birth dates
        first[i], dob[i] = "john", f"1970-03-{1 + i % 20:02d}"
    for i in rng.choice(np.arange(100 + johns, n), size=3, replace=False):
        first[i] = None
    attrs = {"last_name": pd.Series(["smith"] * n, dtype="str"), "first_name": pd.Series(first, dtype="str"),
             "birth_date": pd.Series(dob, dtype="str")}
    return attrs, [(2 * k, 2 * k + 1) for k in range(50)]


def _matching_blocking(rules: list[dict], cap: int = 500):
    """A BlockingConfig as a matching section makes it (the default refine keys come from there)."""
    from resolver.config import MatchingConfig

    return MatchingConfig.model_validate({
        "blocking": {"max_block_size": cap, "rules": rules},
        "comparisons": [{"name": "first_name", "column": "first_name", "method": "jaro_winkler", "thresholds": [0.9]},
                        {"name": "birth_date", "column": "birth_date", "method": "date"}]}).blocking


def _pair_set(left, right) -> set[tuple[int, int]]:
    return set(zip(np.asarray(left).tolist(), np.asarray(right).tolist()))


def test_default_refine_keys_are_the_comparison_columns_the_rule_does_not_use():
    blocking = _matching_blocking([{"name": "surname", "keys": ["last_name"]},
                                   {"name": "first", "keys": ["prefix(first_name, 3)"]},
                                   {"name": "mine", "keys": ["last_name"], "refine": ["year(birth_date)"]},
                                   {"name": "none", "keys": ["last_name"], "refine": []}])
    assert [r.refine_keys for r in blocking.rules] == [["first_name", "birth_date"], ["birth_date"],
                                                        ["year(birth_date)"], []]


def test_a_big_block_is_refined_and_its_true_pairs_found_on_the_numba_and_array_paths():
    attrs, truth = _smiths()
    blocking = build_blocking_keys(_matching_blocking([{"name": "surname", "keys": ["last_name"]}]), attrs,
                                   np.ones(600, bool))
    plan = blocking.plans[0]
    assert (plan.refined_blocks, plan.capped_blocks, plan.refine_missing) == (1, 0, 3)
    assert plan.pairs == plan.refined_pairs == 50 and blocking.warnings(500) == []
    labels = np.arange(600)
    held = candidate_pairs(blocking, labels)
    assert _pair_set(held.left, held.right) == set(truth)
    xl, xr = rule_pairs_xp(np, blocking.keys, 0, labels, chunk=11)
    assert xl.tolist() == held.left.tolist() and xr.tolist() == held.right.tolist()


def test_a_sub_block_still_over_the_cap_is_refined_by_the_next_key():
    attrs, truth = _smiths(johns=450)  # 450 johns: over a cap of 400 after the first name too
    blocking = build_blocking_keys(_matching_blocking([{"name": "surname", "keys": ["last_name"]}], cap=400), attrs,
                                   np.ones(600, bool))
    plan = blocking.plans[0]
    assert plan.capped_blocks == 0 and plan.refined_blocks == 1
    pairs = candidate_pairs(blocking, np.arange(600))
    johns = [i for i in range(100, 550) if attrs["first_name"][i] == "john"]
    same_dob = {(i, j) for i in johns for j in johns if i < j and attrs["birth_date"][i] == attrs["birth_date"][j]}
    assert same_dob and _pair_set(pairs.left, pairs.right) == set(truth) | same_dob
    assert plan.pairs == len(truth) + len(same_dob)


def test_what_is_over_the_cap_after_the_last_refine_key_is_skipped_with_the_warning():
    attrs, truth = _smiths(johns=450)
    blocking = build_blocking_keys(_matching_blocking([{"name": "surname", "keys": ["last_name"],
                                                        "refine": ["first_name"]}], cap=400), attrs,
                                   np.ones(600, bool))
    plan = blocking.plans[0]
    assert (plan.capped_blocks, plan.capped_records) == (1, 450)
    (warning,) = blocking.warnings(400)
    assert "'smith | john' has 450 records" in warning
    pairs = candidate_pairs(blocking, np.arange(600))
    assert _pair_set(pairs.left, pairs.right) == set(truth)  # the johns' block is skipped, the rest found
    unrefined = build_blocking_keys(_matching_blocking([{"name": "surname", "keys": ["last_name"], "refine": []}]),
                                    attrs, np.ones(600, bool))
    assert unrefined.plans[0].pairs == 0 and len(candidate_pairs(unrefined, np.arange(600))) == 0
    assert "'smith' has 600 records" in unrefined.warnings(500)[0]


def _reference_pairs(attrs: dict[str, pd.Series], rules: list[tuple[list[str], list[str]]], cap: int,
                     labels: np.ndarray) -> dict[tuple[int, int], int]:
    """Brute force: each rule's blocks by its columns, an over-cap block split by each refine column
    in turn; a pair goes to the first rule whose (refined) block holds both records."""
    n = len(labels)

    def blocks(columns, members):
        out: dict = {}
        for i in members:
            values = tuple(attrs[c][i] for c in columns)
            if not any(pd.isna(v) for v in values):
                out.setdefault(values, []).append(i)
        return list(out.values())

    block_of = []
    for keys, refine in rules:
        mine, todo = {}, [(list(keys), block) for block in blocks(keys, range(n))]
        while todo:
            columns, block = todo.pop()
            if len(block) <= cap:
                for i in block:
                    mine[i] = (tuple(columns), tuple(attrs[c][i] for c in columns))
            elif len(columns) - len(keys) < len(refine):
                todo += [(columns + [refine[len(columns) - len(keys)]], sub)
                         for sub in blocks(columns + [refine[len(columns) - len(keys)]], block)]
        block_of.append(mine)
    out = {}
    for i in range(n):
        for j in range(i + 1, n):
            for r, mine in enumerate(block_of):
                if i in mine and mine.get(i) == mine.get(j):
                    if labels[i] != labels[j]:
                        out[(i, j)] = r
                    break
    return out


@pytest.mark.slow
@settings(max_examples=50, deadline=None)
@given(data=st.data(), n=st.integers(2, 45), cap=st.integers(2, 6))
def test_refined_keys_keep_each_pair_once_with_the_first_rule_that_finds_it(data, n, cap):
    column = st.sampled_from(["a", "b", None])
    attrs = {c: pd.Series(data.draw(st.lists(column, min_size=n, max_size=n)), dtype="str") for c in "fstu"}
    labels = np.array(data.draw(st.lists(st.integers(0, n), min_size=n, max_size=n)))
    rules = [(["f"], ["s", "t"]), (["s"], ["u"]), (["t"], [])]
    config = BlockingConfig(max_block_size=cap, rules=[BlockingRule(name=f"r{r}", keys=k, refine=f)
                                                       for r, (k, f) in enumerate(rules)])
    blocking = build_blocking_keys(config, attrs, np.ones(n, bool))
    pairs = candidate_pairs(blocking, labels)
    got = {(int(i), int(j)): int(r) for i, j, r in zip(pairs.left, pairs.right, pairs.rule)}
    assert len(got) == len(pairs) and got == _reference_pairs(attrs, rules, cap, labels)
    for r in range(3):
        left, right = rule_pairs_of(blocking.keys, r, labels)
        xl, xr = rule_pairs_xp(np, blocking.keys, r, labels, chunk=5)
        assert left.tolist() == xl.tolist() and right.tolist() == xr.tolist()


@pytest.mark.slow
def test_plan_and_the_run_summary_report_refined_blocks(tmp_path, capsys):
    attrs, _ = _smiths()
    rows = pd.DataFrame({"id": range(600), "first": attrs["first_name"], "last": attrs["last_name"],
                         "dob": attrs["birth_date"]})
    rows.to_csv(tmp_path / "people.csv", index=False)
    body = {"sources": [{"name": "people", "format": "csv", "path": "people.csv", "key": "id",
                         "attributes": {"first_name": "first", "last_name": "last", "birth_date": "dob"}}],
            "matching": {"blocking": {"rules": [{"name": "surname", "keys": ["last_name"]}]},
                         "comparisons": [{"name": "first_name", "column": "first_name", "method": "exact"},
                                         {"name": "birth_date", "column": "birth_date", "method": "date"}]}}
    config = _config(tmp_path, body)
    assert main(["plan", "--config", str(config)]) == EXIT_OK
    out = capsys.readouterr().out
    assert "re-blocked by first_name, birth_date: 50 pairs; 3 records without a refine key left them" in out
    assert _run(config) == EXIT_OK
    summary = _summary(tmp_path)
    (plan,) = summary["matching"]["blocking_plan"]
    assert (plan["refined_blocks"], plan["refined_pairs"], plan["capped_blocks"]) == (1, 50, 0)
    assert summary["matching"]["candidate_pairs"] == 50 and summary["matching"]["blocking_warnings"] == []


def test_refine_keys_are_checked_like_keys(tmp_path):
    from resolver.config import ConfigError

    _duplicated_people(tmp_path)
    for refine, message in ((["shoe_size"], "no records source has attribute"), (["shout(first_name)"], "shout")):
        matching = {**MATCHING, "blocking": {"rules": [{"name": "surname", "keys": ["last_name"], "refine": refine}]}}
        body = {"sources": [{"name": "people", "format": "csv", "path": "people.csv", "key": "id",
                             "attributes": ATTRIBUTES}], "matching": matching}
        with pytest.raises(ConfigError, match=message):
            load_config(_config(tmp_path, body))
