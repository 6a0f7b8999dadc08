"""Source snapshots: a run with a state loads the ingested tables of unchanged files instead of
reading and normalizing them again, and gives exactly what ingesting them gives; record keys
repeated across the files of a source are rejected as they are within one file."""

import json
import os
import shutil

import pandas as pd
import pytest

from resolver.cli import EXIT_OK, main
from resolver.ingest.tables import DUPLICATE_KEY
from resolver.synth.people import generate

pytestmark = pytest.mark.slow  # generated data, several pipeline runs

TABLES = ("identity_map", "identifier_map", "persons", "golden_records", "conflicts", "policy_actions", "rejects",
          "scored_pairs", "review_queue", "blocking_keys")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("snapshots")
    generate(root, 1200, seed=31, workers=1)
    return root


def _run(root, out, *extra) -> dict:
    assert main(["run", "--config", str(root / "resolver.yaml"), "--out", str(out), "-q", *extra]) == EXIT_OK
    return json.loads((out / "run_summary.json").read_text())


def _jobs(root) -> int:
    return sum(1 for p in (root / "salesforce").glob("*.csv")) + sum(1 for p in (root / "segment").glob("*.json*"))


def _loaded(summary) -> int:
    return next(s for s in summary["stages"] if s["stage"].startswith("ingest"))["loaded_from_state"]


def _table(out, name) -> pd.DataFrame:
    return pd.read_parquet(out / f"{name}.parquet")


def test_unchanged_files_are_loaded_and_give_the_same_outputs(world, tmp_path):
    state = tmp_path / "state"
    first = _run(world, tmp_path / "first", "--state", str(state))
    assert _loaded(first) == 0
    snapshots = list((state / "versions").glob("*/sources/*"))
    assert len(snapshots) == _jobs(world)
    assert not list(state.glob(".pending-*"))

    os.utime(min((world / "salesforce").glob("Contact*.csv")))  # touched, same content: still loaded
    second = _run(world, tmp_path / "second", "--state", str(state))
    assert _loaded(second) == _jobs(world)
    assert second["incremental"]["parts_loaded_from_state"] == _jobs(world)
    assert second["rows"] == first["rows"] and second["sources"] == first["sources"]
    for name in TABLES:
        pd.testing.assert_frame_equal(_table(tmp_path / "second", name), _table(tmp_path / "first", name), obj=name)

    # Without a state, the same data gives the same persons (ids are the members' own then).
    plain = _run(world, tmp_path / "plain")
    assert plain["persons"] == second["persons"]
    pd.testing.assert_frame_equal(_table(tmp_path / "plain", "policy_actions"), _table(tmp_path / "second", "policy_actions"))


def test_a_changed_file_is_ingested_again_alone(world, tmp_path):
    data = tmp_path / "data"
    generate(data, 800, seed=32, workers=1)
    state = tmp_path / "state"
    _run(data, tmp_path / "out", "--state", str(state))
    shutil.copytree(state, tmp_path / "state-copy")
    lead = data / "salesforce" / "Lead.csv"
    frame = pd.read_csv(lead, dtype=str, keep_default_na=False)
    frame.iloc[:40, frame.columns.get_loc("LastName")] = "Quarrington-Smythe"
    frame.to_csv(lead, index=False, quoting=1)
    summary = _run(data, tmp_path / "out", "--state", str(state))
    assert _loaded(summary) == _jobs(data) - 1

    # The same state, everything ingested again (and scored with the same model): the same outputs.
    full = _run(data, tmp_path / "full", "--state", str(tmp_path / "state-copy"), "--full",
                "--model", str(tmp_path / "out" / "model.json"))
    assert _loaded(full) == 0 and full["rows"] == summary["rows"]
    for name in TABLES:
        pd.testing.assert_frame_equal(_table(tmp_path / "out", name), _table(tmp_path / "full", name), obj=name)
    assert (_table(tmp_path / "out", "conflicts")["value"] == "Quarrington-Smythe").any()


def test_record_keys_repeated_across_files_are_rejected(world, tmp_path):
    data = tmp_path / "data"
    generate(data, 500, seed=33, workers=1, events=False)
    base = _run(data, tmp_path / "base")
    first = min((data / "salesforce").glob("Contact*.csv"))
    frame = pd.read_csv(first, dtype=str, keep_default_na=False)
    repeated = frame.head(3).copy()
    repeated["LastName"] = "Later"
    repeated.to_csv(data / "salesforce" / "Contact_zz.csv", index=False, quoting=1)

    summary = _run(data, tmp_path / "out")
    rejects = _table(tmp_path / "out", "rejects")
    dup = rejects[rejects["reason"] == DUPLICATE_KEY]
    assert len(dup) == 3
    assert set(dup["file"]) == {str(data / "salesforce" / "Contact_zz.csv")}
    assert list(dup["row"]) == [1, 2, 3] and list(dup["raw"]) == list(repeated["Id"])
    assert summary["rows"]["accounted"] and summary["rows"]["rejected"] == base["rows"]["rejected"] + 3
    assert summary["persons"] == base["persons"]
    assert "Later" not in set(_table(tmp_path / "out", "golden_records")["last_name"].dropna())
