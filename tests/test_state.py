"""Persistent person ids across runs (unchanged, merged, split), lineage, and the state store's
atomic updates."""

import json
from pathlib import Path

import pandas as pd
import pytest

from resolver.cli import EXIT_OK, main
from resolver.state.store import State, StateError, StateStore

CONFIG = """
run: {output_dir: out, workers: 1}
sources:
  - name: crm
    format: csv
    path: crm.csv
    key: Id
    timestamp: Modified
    deleted: IsDeleted
    attributes: {first_name: FirstName, email: Email}
    identifiers: {email: [Email, Email2]}
identity:
  types:
    email: {normalizer: email, priority: 1, limit: 5, strong: true}
"""

BASE = [
    # Id, FirstName, Email, Email2, Modified, IsDeleted
    ("a1", "Ann", "ann@x.com", "", "2020-01-01", "false"),
    ("a2", "Ann", "ann@x.com", "", "2020-02-01", "false"),
    ("b1", "Bob", "bob@x.com", "", "2022-01-01", "false"),
    ("b2", "Bob", "bob@x.com", "", "2022-02-01", "false"),
    ("c1", "Cy", "cy@x.com", "", "2021-01-01", "false"),
]
BRIDGE = ("m1", "Ann", "ann@x.com", "bob@x.com", "2023-01-01", "false")


def _run(folder: Path, rows) -> dict[str, str]:
    lines = ["Id,FirstName,Email,Email2,Modified,IsDeleted"] + [",".join(r) for r in rows]
    (folder / "crm.csv").write_text("\n".join(lines) + "\n")
    (folder / "resolver.yaml").write_text(CONFIG)
    code = main(["run", "--config", str(folder / "resolver.yaml"), "--state", str(folder / "state"), "-q"])
    assert code == EXIT_OK
    identity = pd.read_parquet(folder / "out" / "identity_map.parquet")
    return dict(zip(identity["record_key"], identity["person_id"]))


@pytest.mark.slow
def test_ids_persist_merge_keeps_the_oldest_and_split_keeps_the_largest(tmp_path):
    first = _run(tmp_path, BASE)
    ann, bob, cy = first["a1"], first["b1"], first["c1"]
    assert first["a2"] == ann and first["b2"] == bob and len({ann, bob, cy}) == 3

    assert _run(tmp_path, BASE) == first  # nothing changed: every id stays

    merged = _run(tmp_path, BASE + [BRIDGE])  # m1 holds both emails: Ann and Bob merge
    survivor = min(ann, bob)  # created in the same run: the tie goes to the smaller id
    assert {merged[k] for k in ("a1", "a2", "b1", "b2", "m1")} == {survivor}
    assert merged["c1"] == cy

    split = _run(tmp_path, BASE + [BRIDGE[:-1] + ("true",)])  # the bridge is deleted: they split again
    assert split["c1"] == cy
    # Both parts hold two records; Ann's is older, so it keeps the merged person's id.
    assert split["a1"] == split["a2"] == survivor
    new_bob = split["b1"]
    assert split["b2"] == new_bob and new_bob not in {ann, bob, cy}  # a retired id is never reused

    lineage = pd.read_parquet(tmp_path / "out" / "lineage.parquet")
    assert lineage["event"].tolist() == ["merge", "split"]
    merge, part = lineage.iloc[0], lineage.iloc[1]
    assert merge["person_id"] == survivor and merge["other_id"] == max(ann, bob) and merge["records"] == 2
    assert part["person_id"] == survivor and part["other_id"] == new_bob and part["records"] == 2
    assert lineage["run_id"].nunique() == 2 and lineage["time"].notna().all()

    state = StateStore(tmp_path / "state").load()
    assert state.runs == 4
    status = state.persons.set_index(state.persons["person_key"].map(lambda k: f"p{k:016x}"))["status"]
    assert status[max(ann, bob)] == "merged" and status[survivor] == "active" and status[new_bob] == "active"
    assert not any("@" in str(v) for v in state.members.to_numpy().ravel())  # hashes only

    summary = json.loads((tmp_path / "out" / "run_summary.json").read_text())
    assert summary["persistent_ids"]["split_off"] == 1 and summary["persistent_ids"]["kept"] == 2


@pytest.mark.slow
def test_without_a_state_ids_come_from_the_members(tmp_path):
    (tmp_path / "crm.csv").write_text("Id,FirstName,Email,Email2,Modified,IsDeleted\n" +
                                      "\n".join(",".join(r) for r in BASE) + "\n")
    (tmp_path / "resolver.yaml").write_text(CONFIG)
    main(["run", "--config", str(tmp_path / "resolver.yaml"), "-q"])
    assert not (tmp_path / "out" / "lineage.parquet").exists()
    assert not (tmp_path / "state").exists()


def test_a_crash_mid_commit_leaves_the_previous_state(tmp_path, monkeypatch):
    store = StateStore(tmp_path / "state")
    store.commit(State(runs=1), "run-1")
    before = store.load()

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", broken)
    with pytest.raises(OSError, match="disk full"):
        store.commit(State(runs=2), "run-2")
    monkeypatch.undo()
    after = store.load()
    assert after.runs == 1 and after.salt == before.salt
    assert not [p for p in (tmp_path / "state" / "versions").iterdir() if p.name.startswith(".tmp")]


def test_versions_are_pruned_and_a_broken_pointer_is_named(tmp_path):
    store = StateStore(tmp_path / "state")
    for i in range(4):
        store.commit(State(runs=i), f"run-{i}")
    assert len(list((tmp_path / "state" / "versions").iterdir())) == 2
    (tmp_path / "state" / "CURRENT").write_text("nope\n")
    with pytest.raises(StateError, match="CURRENT"):
        store.load()
