"""Survivorship: each rule of a chain, the deciding rule, provenance, conflicts and review flags,
on hand-made records; then golden records from a real run."""

import numpy as np
import pandas as pd
import pytest

from resolver.config import Config, GoldenConfig, load_config
from resolver.persons.golden import build_golden, source_ranks

SOURCES = [
    {"name": "crm", "kind": "records", "format": "csv", "path": "x.csv", "key": "Id", "trust": 2,
     "attributes": {"first_name": "F", "last_name": "L", "email": "E", "city": "C"}},
    {"name": "leads", "kind": "records", "format": "csv", "path": "y.csv", "key": "Id", "trust": 1,
     "attributes": {"first_name": "F", "last_name": "L", "email": "E", "city": "C"}},
]


def _config(**golden) -> Config:
    return Config.model_validate({"sources": SOURCES, "identity": {"types": {}}, "golden": golden})


def _records(rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    frame.insert(0, "record_id", np.arange(len(frame)))
    frame["record_key"] = [f"r{i}" for i in range(len(frame))]
    frame["timestamp"] = pd.to_datetime(frame["timestamp"])
    frame["is_deleted"] = frame.get("is_deleted", False)
    for column in ("first_name", "last_name", "email", "city"):
        frame[column] = frame.get(column, pd.Series([None] * len(frame))).astype("str")
    return frame


def _golden(rows, persons, config):
    records = _records(rows)
    people = pd.Series(sorted(set(persons) - {None}), dtype="str")
    return build_golden(records, pd.Series(persons, dtype="str"), people, config), records


def test_source_priority_then_recency_with_provenance():
    rows = [
        {"source": "crm", "timestamp": "2024-01-01", "first_name": "Robert", "city": "Boston"},
        {"source": "leads", "timestamp": "2023-01-01", "first_name": "Bob", "city": "boston "},
        {"source": "crm", "timestamp": "2025-01-01", "first_name": "Rob", "city": None},
    ]
    result, _ = _golden(rows, ["p1", "p1", "p1"], _config())
    g = result.golden_records.iloc[0]
    # leads has the better trust (1): its Bob wins on source priority.
    assert g["first_name"] == "Bob" and g["first_name__source"] == "leads" and g["first_name__record_key"] == "r1"
    assert g["first_name__rule"] == "source_priority"
    assert g["first_name__timestamp"] == pd.Timestamp("2023-01-01")
    # "Boston" and "boston " are one value in match form: no conflict, and the missing city never wins.
    assert g["city__rule"] == "agreement" and g["city"] == "boston"
    assert g["email"] is pd.NA or pd.isna(g["email"])


def test_explicit_priority_and_fallback_chain():
    rows = [
        {"source": "crm", "timestamp": "2024-01-01", "first_name": "Anna"},
        {"source": "crm", "timestamp": "2025-06-01", "first_name": "Ann"},
        {"source": "leads", "timestamp": "2025-01-01", "first_name": "Annie"},
    ]
    config = _config(source_priority=["crm"])
    assert source_ranks(config) == {"crm": 0, "leads": 1}
    g = _golden(rows, ["p"] * 3, config)[0].golden_records.iloc[0]
    # crm first, then among the two crm records the most recent.
    assert (g["first_name"], g["first_name__rule"]) == ("Ann", "most_recent")


@pytest.mark.parametrize(
    ("chain", "expected", "rule"),
    [
        (["most_frequent"], "Jon", "most_frequent"),
        (["longest"], "Jonathan", "longest"),
        (["first_non_null"], "Jonathan", "first_non_null"),
        (["most_recent"], "John", "most_recent"),
    ],
)
def test_each_rule(chain, expected, rule):
    rows = [
        {"source": "crm", "timestamp": "2020-01-01", "first_name": None},
        {"source": "crm", "timestamp": "2021-01-01", "first_name": "Jonathan"},
        {"source": "crm", "timestamp": "2022-01-01", "first_name": "Jon"},
        {"source": "crm", "timestamp": "2023-01-01", "first_name": "jon"},
        {"source": "crm", "timestamp": "2024-01-01", "first_name": "John"},
    ]
    g = _golden(rows, ["p"] * 5, _config(fields={"first_name": chain}))[0].golden_records.iloc[0]
    assert g["first_name"].lower() == expected.lower()
    assert g["first_name__rule"] == rule


def test_unbroken_ties_fall_to_the_first_record_and_say_so():
    rows = [
        {"source": "crm", "timestamp": "2024-01-01", "last_name": "Smith"},
        {"source": "crm", "timestamp": "2024-01-01", "last_name": "Smyth"},
    ]
    g = _golden(rows, ["p", "p"], _config(rules=["source_priority", "most_recent"]))[0].golden_records.iloc[0]
    assert (g["last_name"], g["last_name__rule"]) == ("Smith", "tiebreak")


def test_deleted_records_and_records_without_a_person_give_no_values():
    rows = [
        {"source": "crm", "timestamp": "2025-01-01", "first_name": "Zed", "is_deleted": True},
        {"source": "crm", "timestamp": "2020-01-01", "first_name": "Amy", "is_deleted": False},
        {"source": "crm", "timestamp": "2026-01-01", "first_name": "Nobody", "is_deleted": False},
    ]
    result, _ = _golden(rows, ["p", "p", None], _config(rules=["most_recent"]))
    assert result.golden_records["first_name"].tolist() == ["Amy"]
    assert len(result.conflicts) == 0


def test_conflicts_list_every_value_with_sources_and_flag_distant_names():
    rows = [
        {"source": "crm", "timestamp": "2024-01-01", "first_name": "Larry", "last_name": "Page"},
        {"source": "leads", "timestamp": "2023-01-01", "first_name": "Lawrence", "last_name": "Page"},
        {"source": "crm", "timestamp": "2024-02-01", "first_name": "Maria", "last_name": "Lopez"},
        {"source": "leads", "timestamp": "2024-03-01", "first_name": "Xavier", "last_name": "Lopez"},
        {"source": "crm", "timestamp": "2024-04-01", "first_name": "Maria", "last_name": "Lopez"},
    ]
    result, _ = _golden(rows, ["a", "a", "b", "b", "b"], _config())
    c = result.conflicts
    a = c[c["person_id"] == "a"].set_index("value")
    assert set(a.index) == {"Larry", "Lawrence"} and a.loc["Lawrence", "chosen"]  # leads: more trusted
    assert not a["needs_review"].any()  # a nickname is not a different name
    b = c[c["person_id"] == "b"].set_index("value")
    assert b.loc["Maria", "records"] == 2 and b.loc["Maria", "sources"] == "crm"
    assert b.loc["Xavier", "chosen"] and b["chosen_value"].unique().tolist() == ["Xavier"]
    assert b["needs_review"].all() and b.loc["Maria", "similarity_to_chosen"] < 0.8
    flags = result.golden_records.set_index("person_id")["needs_review"]
    assert flags.to_dict() == {"a": False, "b": True}
    assert result.summary["persons_flagged_for_review"] == 1


def test_config_rejects_unknown_rules_fields_and_sources():
    with pytest.raises(ValueError, match="golden.fields"):
        _config(fields={"shoe_size": ["longest"]})
    with pytest.raises(ValueError, match="source_priority"):
        _config(source_priority=["erp"])
    with pytest.raises(ValueError):
        GoldenConfig(rules=["loudest"])


@pytest.mark.slow
def test_golden_records_of_a_run(tmp_path):
    from resolver.pipeline import run
    from resolver.synth.people import generate

    generate(tmp_path, 400, seed=3, workers=1)
    config = load_config(tmp_path / "resolver.yaml")
    config.run.workers = 1
    res = run(config)
    golden = pd.read_parquet(config.output_path() / "golden_records.parquet")
    persons = pd.read_parquet(config.output_path() / "persons.parquet")
    assert golden["person_id"].tolist() == persons["person_id"].tolist()
    known = golden[~persons["is_anonymous"].to_numpy()]
    assert known["first_name"].notna().mean() > 0.95
    # Provenance points at a record of the same person.
    ids = res.identity_map.set_index(["source", "record_key"])["person_id"]
    sample = known.dropna(subset=["email"]).head(50)
    for _, row in sample.iterrows():
        assert ids.loc[(row["email__source"], row["email__record_key"])] == row["person_id"]
    conflicts = pd.read_parquet(config.output_path() / "conflicts.parquet")
    assert (conflicts.groupby(["person_id", "field"])["chosen"].sum() == 1).all()


def _received(source: str) -> str:
    """What serve received from a source ranks as its export source (sync_name), just above it."""
    from resolver.sync.mapping import sync_name

    return sync_name(source)


@pytest.mark.parametrize("chain", [["source_priority"], ["most_recent"], ["longest"],
                                   ["longest", "most_recent"], ["most_frequent", "source_priority"]])
@pytest.mark.parametrize(("held", "event"), [
    (("crm", "2024-01-01", "Jon"), ("leads", "2023-01-01", "Jonathan")),
    (("leads", "2022-06-01", "Jonathan"), ("crm", "2024-01-01", "Jo")),
    (("crm", "2021-01-01", "Ann"), ("leads", "2022-01-01", "Bobby")),
])
def test_serve_ranks_a_value_as_the_batch_ranks_it(chain, held, event):
    """The survivorship rules are written once (golden's rank keys): serve's choice between the
    value a person holds and an event's value is the batch's choice between their two records
    (cases where a rule decides: ties fall apart differently, by design)."""
    from resolver.sync.resolve import Resolver

    config = _config(fields={"first_name": chain})
    rows = [{"source": s, "timestamp": t, "first_name": v} for s, t, v in (held, event)]
    batch = _golden(rows, ["p", "p"], config)[0].golden_records.iloc[0]["first_name"]
    resolver = Resolver(config, None)
    iso = lambda day: f"{day}T00:00:00.000000Z"  # noqa: E731 - the store's fixed-width text
    serve_takes_event = resolver._wins("first_name", event[2], _received(event[0]), iso(event[1]),
                                       (held[2], _received(held[0]), iso(held[1])))
    assert batch == (event[2] if serve_takes_event else held[2])


def test_value_keys_and_counts_of_long_runs_equal_those_of_short_ones(monkeypatch):
    """A person's values are compared pairwise up to LONG_RUN candidates and dictionary-encoded
    beyond: both give equal keys for equal values (within a person) and the same value counts."""
    import numpy as np
    import pandas as pd

    from resolver.persons import golden

    values = pd.Series(["a", "b", "a", "c", "b", "a"] * 7 + ["x", "y", "x"], dtype="str")
    rows = np.arange(len(values), dtype=np.int64)
    starts = np.array([0, 42], dtype=np.int64)  # a person of 42 candidates (a long run), one of 3
    short = golden._value_keys(values, rows, starts)
    monkeypatch.setattr(golden, "LONG_RUN", 1)  # every person takes the dictionary path
    long = golden._value_keys(values, rows, starts)
    for keys in (short, long):
        for s, e in ((0, 42), (42, 45)):
            text = values.iloc[s:e].to_numpy()
            same_text = text[:, None] == text[None, :]
            same_key = keys[s:e][:, None] == keys[s:e][None, :]
            assert (same_text == same_key).all()
    for long_run in (1, 32, 64):  # the 42-candidate person counted by sorting, then pairwise
        counts = golden._value_counts(starts, short, long_run)
        assert counts[:6].tolist() == [21, 14, 21, 7, 14, 21] and counts[42:].tolist() == [2, 1, 2]
