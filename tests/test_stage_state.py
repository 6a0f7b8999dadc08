"""Stage 5, state: persistent ids carried from a tiny earlier state (a merge, a split, a new person),
a commit and its reload, and a review decision recorded against a run's literal outputs.

Member and person keys here are small literal integers (a run uses 64-bit hashes), so that every
expected id can be written out: person key 100 is "p0000000000000064".
"""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from resolver.state.review import effective_decisions, load_decisions, review_items
from resolver.state.store import State, StateStore, carry_ids

RUN_2 = pd.Timestamp("2024-03-01", tz="UTC")


def previous_state(members: dict[int, int], created: dict[int, str]) -> State:
    """A state whose persons (key -> creation date) hold the given members (member key -> person key)."""
    return State(
        members=pd.DataFrame({"member_key": np.array(list(members), np.uint64),
                              "person_key": np.array(list(members.values()), np.uint64)}),
        persons=pd.DataFrame({
            "person_key": np.array(list(created), np.uint64), "created_run": "r1",
            "created_at": pd.to_datetime(list(created.values()), utc=True).astype("datetime64[ns, UTC]"),
            "status": "active", "merged_into": np.zeros(len(created), np.uint64),
            "records": np.array([list(members.values()).count(k) for k in created], np.int64)}),
        run_id="r1", runs=1,
    )


def carry(previous: State, labels: list[int], member_keys: list[int], label_keys: list[int]):
    """This run's records (every node a record and a member) in persons `labels`."""
    n, k = len(labels), len(label_keys)
    return carry_ids(previous, np.array(labels), np.array(member_keys, np.uint64), np.ones(n, bool), np.ones(n, bool),
                     np.array(label_keys, np.uint64), np.zeros(k, np.int64), np.ones(k, bool), "r2", RUN_2)


def test_a_merge_keeps_the_oldest_id_and_a_new_person_gets_its_own():
    # r1: person 100 = {1, 2} (January), 200 = {3} (February), 300 = {4}. r2: {1, 2, 3}, {4}, {5}
    previous = previous_state({1: 100, 2: 100, 3: 200, 4: 300}, {100: "2024-01-01", 200: "2024-02-01", 300: "2024-01-01"})
    carried = carry(previous, [0, 0, 0, 1, 2], [1, 2, 3, 4, 5], label_keys=[1, 4, 5])
    assert carried.label_keys.tolist() == [100, 300, 5]
    assert carried.lineage[["event", "person_id", "other_id", "records"]].values.tolist() == [
        ["merge", "p0000000000000064", "p00000000000000c8", 1]]
    assert carried.persons[["person_key", "status", "merged_into", "records"]].values.tolist() == [
        [5, "active", 0, 1], [100, "active", 0, 3], [200, "merged", 100, 0], [300, "active", 0, 1]]
    assert carried.members.values.tolist() == [[1, 100], [2, 100], [3, 100], [4, 300], [5, 5]]
    assert carried.counts == {"kept": 2, "new": 1, "split_off": 0, "merged_away": 1, "merge_events": 1,
                              "split_events": 0}


def test_a_split_leaves_the_id_with_the_larger_part():
    previous = previous_state({1: 100, 2: 100, 3: 100}, {100: "2024-01-01"})
    carried = carry(previous, [0, 0, 1], [1, 2, 3], label_keys=[1, 3])
    assert carried.label_keys.tolist() == [100, 3]
    assert carried.lineage[["event", "person_id", "other_id", "records"]].values.tolist() == [
        ["split", "p0000000000000064", "p0000000000000003", 1]]
    assert carried.counts["split_off"] == 1 and carried.counts["kept"] == 1


def test_a_new_id_never_reuses_one_issued_before():
    # person 200 was merged away earlier; a new person whose smallest member key is 200 gets another key
    previous = previous_state({1: 100}, {100: "2024-01-01", 200: "2024-01-01"})
    carried = carry(previous, [0, 1], [1, 200], label_keys=[1, 200])
    assert carried.label_keys[0] == 100
    assert carried.label_keys[1] not in (0, 100, 200)


def test_a_commit_becomes_the_live_version_and_loads_back(tmp_path):
    store = StateStore(tmp_path / "state")
    assert store.current() is None and store.load().members.empty
    state = previous_state({1: 100, 2: 100}, {100: "2024-01-01"})
    folder = store.commit(state, "r1")
    assert (tmp_path / "state" / "CURRENT").read_text().strip() == folder.name
    loaded = store.load()
    assert loaded.members.values.tolist() == [[1, 100], [2, 100]]
    assert loaded.persons[["person_key", "status", "records"]].values.tolist() == [[100, "active", 2]]
    assert loaded.salt == state.salt and loaded.run_id == "r1"
    store.commit(previous_state({1: 100, 2: 100, 3: 100}, {100: "2024-01-01"}), "r2")
    assert len(store.load().members) == 3  # the newer commit is live


# ------------------------------------------------------------------------------------- review
def outputs(out: Path) -> Path:
    """A run's outputs, as far as review reads them: three records, one pair in the review band."""
    out.mkdir()
    pd.DataFrame({"record_id": [0, 1, 2], "source": ["crm", "web", "web"], "record_key": ["c1", "W1", "w2"],
                  "source_key": ["c1", "w1", "w2"], "status": "active"}).to_parquet(out / "identity_map.parquet")
    pd.DataFrame({"record_id_l": [0], "source_l": ["crm"], "record_key_l": ["c1"], "record_id_r": [1],
                  "source_r": ["web"], "record_key_r": ["W1"], "probability": [0.75],
                  "reason": ["review band"]}).to_parquet(out / "review_queue.parquet")
    (out / "run_summary.json").write_text(json.dumps(
        {"run_id": "r7", "matching": {"thresholds": {"auto_merge": 0.9, "review": 0.6}}}))
    return out


def decide(state: Path, out: Path, accept: bool, *pair: str) -> dict:
    from resolver.state.review import decide

    return decide(state, out, accept, pair=pair, by="steward")


def test_a_decision_on_a_queued_pair_is_recorded_with_its_band(tmp_path):
    out, state = outputs(tmp_path / "out"), tmp_path / "state"
    state.mkdir()
    entry = decide(state, out, True, "crm:c1", "web:w1")
    assert (entry["decision"], entry["probability"], entry["band"], entry["run_id"]) == ("accept", 0.75, "review", "r7")
    assert {entry["record_key_l"], entry["record_key_r"]} == {"c1", "w1"}
    items = review_items(out, state)
    assert items[["kind", "probability", "decision"]].values.tolist() == [["review", 0.75, "accept"]]
    assert items["item_id"][0] == entry["item_id"]


def test_a_pair_no_run_scored_is_unscored_and_the_last_decision_counts(tmp_path):
    out, state = outputs(tmp_path / "out"), tmp_path / "state"
    state.mkdir()
    first = decide(state, out, True, "w2", "c1")
    assert first["band"] == "unscored" and np.isnan(first["probability"])
    second = decide(state, out, False, "c1", "w2")  # the same pair, named the other way round
    assert second["item_id"] == first["item_id"]
    assert load_decisions(state)["decision"].tolist() == ["accept", "reject"]
    assert effective_decisions(load_decisions(state))["decision"].tolist() == ["reject"]


def test_a_decision_needs_two_different_known_records(tmp_path):
    from resolver.state.review import ReviewError

    out, state = outputs(tmp_path / "out"), tmp_path / "state"
    state.mkdir()
    with pytest.raises(ReviewError, match="two different records"):
        decide(state, out, True, "c1", "crm:c1")
    with pytest.raises(ReviewError, match="no record with key 'zz'"):
        decide(state, out, True, "c1", "zz")
