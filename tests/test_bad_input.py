"""Malformed input through the whole command: clear errors or rejects, never a silent loss."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from resolver.cli import EXIT_INPUT, EXIT_OK, main

CONFIG = """
run: {output_dir: out}
sources:
  - name: crm
    format: csv
    path: crm.csv
    key: Id
    deleted: IsDeleted
    attributes: {first_name: FirstName}
    identifiers: {email: Email, phone: Phone}
  - name: web
    kind: events
    format: jsonl
    path: events.jsonl
    key: messageId
    timestamp: timestamp
    identifiers: {user_id: userId, anonymous_id: anonymousId, email: traits.email}
identity:
  types:
    user_id: {priority: 1, limit: 1, strong: true}
    email: {normalizer: email, priority: 2, limit: 3, strong: true}
    phone: {normalizer: phone, priority: 3, limit: 3, strong: true}
    anonymous_id: {priority: 4, limit: 20, hub_cap: 3}
"""

CSV = (
    '"Id","FirstName","Email","Phone","IsDeleted"\n'
    '"0035g00000AbCdE","Jane","jane@x.com","(415) 555-0134","false"\n'
    '"0035g00000AbCdF","Bob","bob@x.com","","false","EXTRA"\n'
    '"0035g00000AbCdG","Ann","ann@x.com","not a phone","false"\n'
    '"","Nokey","nokey@x.com","","false"\n'
)

EVENTS = [
    {"messageId": "m1", "timestamp": "2024-01-01T00:00:00Z", "userId": "u1", "anonymousId": "a1", "traits": {"email": "Jane@X.com"}},
    {"messageId": "m2", "timestamp": "2024-01-02T00:00:00Z", "userId": 42, "anonymousId": "a2"},
    {"messageId": "m3", "timestamp": "2024-01-03T00:00:00Z", "anonymousId": "a3", "traits": {"email": {"nested": 1}}},
    {"messageId": "m1", "timestamp": "2024-01-01T00:00:00Z", "userId": "u1", "anonymousId": "a1"},
    {"messageId": "m4", "timestamp": "2024-01-04T00:00:00Z", "userId": "anonymous"},
]


def _dataset(tmp_path: Path, csv: bytes | str = CSV, truncate_last: bool = True) -> Path:
    (tmp_path / "resolver.yaml").write_text(CONFIG)
    (tmp_path / "crm.csv").write_bytes(csv.encode() if isinstance(csv, str) else csv)
    lines = [json.dumps(e) for e in EVENTS]
    text = "\n".join(lines) + "\n"
    if truncate_last:
        text += '{"messageId": "m9", "anonymousId": "a9", "tim'
    (tmp_path / "events.jsonl").write_text(text)
    return tmp_path / "resolver.yaml"


def _run(config: Path) -> int:
    return main(["run", "--config", str(config), "--quiet"])


@pytest.mark.slow
def test_bad_rows_are_rejected_with_file_row_and_reason_and_all_rows_accounted(tmp_path):
    config = _dataset(tmp_path)
    assert _run(config) == EXIT_OK
    out = tmp_path / "out"
    rejects = pd.read_parquet(out / "rejects.parquet")
    reasons = dict(zip(zip(rejects["source"], rejects["row"]), rejects["reason"]))
    assert "expected 5 fields" in reasons[("crm", 2)]
    assert reasons[("crm", 4)] == "missing record key"
    assert "object" in reasons[("web", 3)]
    assert "duplicate event id" in reasons[("web", 4)]
    assert "no usable identifier" in reasons[("web", 5)]  # its only id, "anonymous", is blocked
    assert "truncated" in reasons[("web", 6)]
    assert (rejects["file"].str.endswith(("crm.csv", "events.jsonl"))).all()

    summary = json.loads((out / "run_summary.json").read_text())
    assert summary["rows"] == {"read": 10, "resolved": 4, "rejected": 6, "suppressed": 0, "accounted": True}

    actions = pd.read_parquet(out / "policy_actions.parquet")
    invalid = actions[actions["action"] == "invalid"]
    assert invalid[invalid["id_type"] == "phone"]["value"].tolist() == ["not a phone"]
    # The numeric user id was read as text, and the CRM record and the web user are one person.
    ids = pd.read_parquet(out / "identifier_map.parquet")
    assert "42" in set(ids.loc[ids["id_type"] == "user_id", "value"])
    identity = pd.read_parquet(out / "identity_map.parquet")
    jane = identity.loc[identity["record_key"] == "0035g00000AbCdE", "person_id"].item()
    assert ids.loc[ids["value"] == "u1", "person_id"].item() == jane


@pytest.mark.slow
def test_invalid_utf8_row_is_rejected_and_the_rest_kept(tmp_path):
    csv = CSV.encode().replace(b"Ann", b"A\xffn")
    config = _dataset(tmp_path, csv=csv, truncate_last=False)
    assert _run(config) == EXIT_OK
    rejects = pd.read_parquet(tmp_path / "out" / "rejects.parquet")
    crm = rejects[rejects["source"] == "crm"]
    assert any("invalid UTF-8" in r and "FirstName" in r for r in crm["reason"])
    identity = pd.read_parquet(tmp_path / "out" / "identity_map.parquet")
    assert "0035g00000AbCdE" in set(identity["record_key"])


@pytest.mark.slow
def test_missing_mapped_column_is_an_input_error_naming_file_and_column(tmp_path, capsys):
    config = _dataset(tmp_path, csv=CSV.replace('"Phone"', '"Telephone"'))
    assert _run(config) == EXIT_INPUT
    err = capsys.readouterr().err
    assert "crm.csv" in err and "Phone" in err


@pytest.mark.slow
def test_empty_file_is_an_input_error(tmp_path, capsys):
    config = _dataset(tmp_path, csv="")
    assert _run(config) == EXIT_INPUT
    assert "empty" in capsys.readouterr().err


@pytest.mark.slow
def test_a_failed_run_leaves_the_previous_outputs_intact(tmp_path):
    config = _dataset(tmp_path)
    assert _run(config) == EXIT_OK
    before = (tmp_path / "out" / "identity_map.parquet").read_bytes()
    (tmp_path / "crm.csv").write_text(CSV.replace('"Email"', '"Mail"'))
    assert _run(config) == EXIT_INPUT
    assert (tmp_path / "out" / "identity_map.parquet").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_bad_config_exits_2_naming_the_field(tmp_path, capsys):
    config = _dataset(tmp_path)
    config.write_text(CONFIG.replace("limit: 3, strong", "limit: zero, strong"))
    assert _run(config) == 2
    assert "identity.types.email.limit" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("people", [300])
def test_demo_command_runs_end_to_end(tmp_path, people, capsys):
    assert main(["demo", "--people", str(people), "--out", str(tmp_path / "demo")]) == EXIT_OK
    out = capsys.readouterr().out
    assert "pairwise P / R / F1" in out and "every row accounted for" in out


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_an_event_redelivered_in_a_later_file_is_a_duplicate(tmp_path, workers):
    config = _dataset(tmp_path, truncate_last=False)
    config.write_text(CONFIG.replace("path: events.jsonl", "path: events*.jsonl").replace("run: {output_dir: out}", f"run: {{output_dir: out, workers: {workers}}}"))
    later = [EVENTS[0], {"messageId": "m7", "timestamp": "2024-01-05T00:00:00Z", "anonymousId": "a7"}]
    (tmp_path / "events2.jsonl").write_text("\n".join(json.dumps(e) for e in later) + "\n")
    assert _run(config) == EXIT_OK
    rejects = pd.read_parquet(tmp_path / "out" / "rejects.parquet")
    redelivered = rejects[rejects["file"].str.endswith("events2.jsonl")]
    assert redelivered["row"].tolist() == [1]
    assert "duplicate event id" in redelivered["reason"].item()
    ids = pd.read_parquet(tmp_path / "out" / "identifier_map.parquet")
    assert ids.loc[ids["value"] == "u1", "events"].item() == 1  # counted once, not twice


@pytest.mark.parametrize("workers", [1, pytest.param(2, marks=pytest.mark.slow)])  # 2: worker processes
@pytest.mark.parametrize("what", ["dangling link", "folder"])
def test_an_unreadable_glob_match_exits_3_with_one_line_naming_it(tmp_path, capsys, what, workers):
    config = _dataset(tmp_path, truncate_last=False)
    config.write_text(CONFIG.replace("path: events.jsonl", "path: events*.jsonl")
                      .replace("run: {output_dir: out}", f"run: {{output_dir: out, workers: {workers}}}"))
    bad = tmp_path / "events2.jsonl"
    bad.symlink_to(tmp_path / "deleted.jsonl") if what == "dangling link" else bad.mkdir()
    assert _run(config) == EXIT_INPUT
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(bad) in err and "cannot read" in err


@pytest.mark.parametrize("fmt", ["csv", "parquet", "jsonl", "segment", "ga4", "adobe", "tealium"])
@pytest.mark.parametrize("what", ["dangling link", "folder"])
def test_an_unreadable_file_of_any_format_exits_3(tmp_path, capsys, fmt, what):
    (tmp_path / "resolver.yaml").write_text(f"""
run: {{output_dir: out}}
sources:
  - {{name: src, kind: events, format: {fmt}, path: "data*", key: id, identifiers: {{user_id: uid}}}}
identity:
  types:
    user_id: {{priority: 1}}
""")
    bad = tmp_path / "data1"
    bad.symlink_to(tmp_path / "gone") if what == "dangling link" else bad.mkdir()
    assert _run(tmp_path / "resolver.yaml") == EXIT_INPUT
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(bad) in err, err


@pytest.mark.slow
def test_errors_are_one_line_when_stderr_is_a_pipe(tmp_path):
    # rich wrapped messages at 80 columns when stderr was not a terminal; a long path shows it.
    deep = tmp_path / ("a_folder_with_a_rather_long_name_" * 3) / ("and_another_one_below_it_" * 3)
    deep.mkdir(parents=True)
    config = _dataset(deep, csv=CSV.replace('"Phone"', '"Telephone"'))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                                        os.environ.get("PYTHONPATH", "")]), "COLUMNS": "80"}
    done = subprocess.run([sys.executable, "-m", "resolver", "run", "--config", str(config), "--quiet"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == EXIT_INPUT
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and len(lines[0]) > 200, done.stderr
    assert str(deep / "crm.csv") in lines[0] and "Phone" in lines[0]
