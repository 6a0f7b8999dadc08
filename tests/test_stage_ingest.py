"""Stage 1, ingest: a few CSV and JSONL lines through the readers and `ingest/tables.py`.

Records become one row each plus identifier observations; events collapse into identifier nodes
and edges; every input row that is not kept is a reject with its row number and reason, and every
value a policy drops (invalid, blocked) is an action. The expected tables are written out by hand.
"""

from pathlib import Path

import pandas as pd
import pytest

from resolver.config import Config
from resolver.ingest.readers import read_source
from resolver.ingest.tables import Vocabulary, ingest_source
from resolver.normalize import Blocklist

CONTACTS = (
    "Id,Email,Phone,FirstName,LastName,Updated\n"
    "C1,Ann.Lee+news@GMail.com,(312) 748-2291,Ann,Lee,2024-01-02T10:00:00Z\n"  # row 1
    "C2,Bob@acme.io,,Bob,Stone,2024-01-03\n"  # row 2: email on the config blocklist
    ",nokey@acme.io,,No,Key,\n"  # row 3: no record key
    "C1,dup@acme.io,,Dup,Row,\n"  # row 4: C1 again
    "C3,test@test.com,,Cy,Vale,\n"  # row 5: a vendor-listed fake email
    "C4,not-an-email,,Di,Moss,\n"  # row 6: not an email at all
)

EVENTS = (
    '{"messageId":"e1","userId":"u1","anonymousId":"a1","email":"annlee@gmail.com","ts":"2024-02-01T00:00:00Z"}\n'
    '{"messageId":"e2","userId":"u1","anonymousId":"a2","ts":"2024-02-02T00:00:00Z"}\n'
    '{"messageId":"e2","userId":"u9","ts":"2024-02-03T00:00:00Z"}\n'  # row 3: a redelivery of e2
    '{"messageId":"e3","anonymousId":"a1","ts":"2024-02-04T00:00:00Z"}\n'
    '{"messageId":"e4","email":"test@test.com"}\n'  # row 5: its only identifier is blocked
    "not json\n"  # row 6
)

IDENTITY = {"types": {
    "user_id": {"priority": 1},
    "email": {"normalizer": "email", "priority": 2},
    "phone": {"normalizer": "phone", "priority": 3},
    "anonymous_id": {"priority": 9},
}}


@pytest.fixture
def config(tmp_path: Path) -> Config:
    (tmp_path / "contacts.csv").write_text(CONTACTS)
    (tmp_path / "events.jsonl").write_text(EVENTS)
    return Config.model_validate({"base_dir": tmp_path, "identity": IDENTITY, "sources": [
        {"name": "crm", "format": "csv", "path": "contacts.csv", "key": "Id", "timestamp": "Updated",
         "identifiers": {"email": "Email", "phone": "Phone"},
         "attributes": {"first_name": "FirstName", "last_name": "LastName"}},
        {"name": "web", "kind": "events", "format": "jsonl", "path": "events.jsonl", "key": "messageId",
         "timestamp": "ts", "identifiers": {"user_id": "userId", "anonymous_id": "anonymousId", "email": "email"}},
    ]})


def ingest(config: Config, name: str):
    """One source through the reader and the canonical tables (the pipeline's ingest step)."""
    source = next(s for s in config.sources if s.name == name)
    blocklist = Blocklist.from_config(values=["bob@acme.io"])
    return ingest_source(config, source, read_source(config, source), blocklist, Vocabulary.from_config(config))


def rows(frame: pd.DataFrame, columns: list[str]) -> list[tuple]:
    return [tuple(None if pd.isna(v) else v for v in row) for row in frame[columns].itertuples(index=False)]


def test_vocabulary_codes_follow_the_config_order(config):
    vocab = Vocabulary.from_config(config)
    assert vocab.types == ("user_id", "email", "phone", "anonymous_id")
    assert vocab.rules == ("identifier", "cooccurrence")
    assert vocab.type_code("phone") == 2


def test_the_csv_reader_keeps_raw_text_with_row_numbers(config):
    raw = read_source(config, config.sources[0])
    assert raw.rows_read == 6 and raw.rejects.empty
    assert raw.frame["Id"].tolist()[:2] == ["C1", "C2"]
    assert pd.isna(raw.frame["Id"][2])
    assert raw.frame["Email"][0] == "Ann.Lee+news@GMail.com"  # not normalized yet
    assert raw.frame["_row"].tolist() == [1, 2, 3, 4, 5, 6]


def test_records_keep_one_row_per_key_and_reject_the_rest(config):
    tables = ingest(config, "crm")
    assert rows(tables.records, ["record_key", "row", "first_name", "first_name_norm", "last_name_norm"]) == [
        ("C1", 1, "Ann", "ann", "lee"),
        ("C2", 2, "Bob", "bob", "stone"),
        ("C3", 5, "Cy", "cy", "vale"),
        ("C4", 6, "Di", "di", "moss"),
    ]
    assert tables.records["timestamp"].tolist()[:2] == [pd.Timestamp("2024-01-02 10:00"), pd.Timestamp("2024-01-03")]
    assert tables.records["timestamp"][2:].isna().all()
    assert tables.resolved == 4 and tables.rows_read == 6
    rejects = pd.concat(tables.rejects, ignore_index=True)
    assert rows(rejects, ["row", "field", "reason", "raw"]) == [
        (3, "Id", "missing record key", None),
        (4, "Id", "duplicate record key (earlier row kept)", "C1"),
    ]


def test_record_observations_hold_only_valid_unblocked_values(config):
    tables = ingest(config, "crm")
    # gmail dots and +tags folded, the phone in E.164; C2..C4 keep no email (blocked, fake, invalid)
    assert rows(tables.observations, ["record_pos", "type", "value", "explicit"]) == [
        (0, 1, "annlee@gmail.com", False),
        (0, 2, "+13127482291", False),
    ]
    assert rows(pd.concat(tables.actions, ignore_index=True), ["action", "id_type", "value", "reason", "count"]) == [
        ("invalid", "email", "not-an-email", "invalid email", 1),
        ("blocked", "email", "bob@acme.io", "blocked value (config)", 1),
        ("blocked", "email", "test@test.com", "fake email", 1),
    ]
    assert rows(tables.flagged, ["record_pos", "action", "value"]) == [
        (1, "blocked", "bob@acme.io"), (2, "blocked", "test@test.com"), (3, "invalid", "not-an-email"),
    ]


def test_events_collapse_into_nodes_and_anchor_edges(config):
    tables = ingest(config, "web")
    assert tables.events == 3 and tables.rows_read == 6
    nodes = tables.event_nodes.set_index("value")
    # u1 anchors e1 and e2 (the strongest id of each); a1 anchors e3 (it has nothing stronger)
    assert nodes.loc[["u1", "annlee@gmail.com", "a1", "a2"], "events"].tolist() == [2, 1, 2, 1]
    assert nodes.loc[["u1", "annlee@gmail.com", "a1", "a2"], "anchored"].tolist() == [2, 0, 1, 0]
    assert nodes.loc["a1", "first_seen"] == pd.Timestamp("2024-02-01")
    assert nodes.loc["a1", "last_seen"] == pd.Timestamp("2024-02-04")
    assert "u9" not in nodes.index  # only on the redelivered (rejected) row
    value = tables.event_nodes["value"]
    edges = {(value[a], value[b]): (kind, count)
             for a, b, kind, count in tables.event_edges[["a", "b", "type", "count"]].itertuples(index=False)}
    # one edge per (anchor, other id), typed like its weaker end: anonymous_id = 3, email = 1
    assert edges == {("u1", "a1"): (3, 1), ("u1", "annlee@gmail.com"): (1, 1), ("u1", "a2"): (3, 1)}
    assert set(tables.event_edges["rule"]) == {1} and not tables.event_edges["explicit"].any()


def test_event_rejects_say_why_each_row_was_dropped(config):
    tables = ingest(config, "web")
    rejects = pd.concat(tables.rejects, ignore_index=True).sort_values("row")
    assert rejects["row"].tolist() == [3, 5, 6]
    reasons = rejects["reason"].tolist()
    assert reasons[0] == "duplicate event id (redelivery)"
    assert reasons[1] == "no usable identifier (all missing, invalid or blocked)"
    assert reasons[2].startswith("invalid JSON")


def test_one_identifier_hashes_alike_in_records_and_events(config):
    crm, web = ingest(config, "crm"), ingest(config, "web")
    email = crm.observations.loc[crm.observations["value"] == "annlee@gmail.com", "hash"].item()
    assert email == web.event_nodes.loc[web.event_nodes["value"] == "annlee@gmail.com", "hash"].item()
    assert email != 0
