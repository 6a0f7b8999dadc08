"""`resolver review`: decisions recorded in the state and applied by the next run, end to end on
generated data (run, decide, run again), plus the run history they feed."""

import json

import pandas as pd
import pytest

from resolver.cli import EXIT_CONFIG, EXIT_OK, main
from resolver.state.history import load_history
from resolver.state.review import DECISIONS_FILE, load_decisions

pytestmark = pytest.mark.slow  # every test reads the stewarded runs (conftest: generated data, two pipeline runs)


def _person(identity: pd.DataFrame, key: str) -> str:
    source, record_key = key.split(":", 1)
    row = identity[(identity["source"] == source) & (identity["record_key"] == record_key)]
    assert len(row) == 1
    return row["person_id"].iloc[0]


def _pair(stewarded, name: str) -> tuple[str, str]:
    args = stewarded["picks"][name]
    if args[0] == "--pair":
        return args[1], args[2]
    row = load_decisions(stewarded["state"]).query("item_id == @args[1]").iloc[0]
    return (f"{row['source_l']}:{_record_key(stewarded, row['source_l'], row['record_key_l'])}",
            f"{row['source_r']}:{_record_key(stewarded, row['source_r'], row['record_key_r'])}")


def _record_key(stewarded, source: str, source_key: str) -> str:
    identity = stewarded["identity_first"]
    return identity[(identity["source"] == source) & (identity["source_key"] == source_key)]["record_key"].iloc[0]


def _summary(out) -> dict:
    return json.loads((out / "run_summary.json").read_text())


def test_decisions_are_kept_in_the_state_with_who_and_when(stewarded):
    decisions = load_decisions(stewarded["state"])
    assert len(decisions) == len(stewarded["picks"]) == 8
    assert set(decisions["decision"]) == {"accept", "reject"}
    assert (decisions["decided_by"] == "steward-2").sum() == 1
    assert decisions["decided_at"].notna().all()
    # records are named by who they are across runs, never by a run's record_id
    assert "record_id" not in " ".join(decisions.columns)
    assert (decisions["member_key_l"] < decisions["member_key_r"]).all()
    assert not list(stewarded["state"].glob(f".{DECISIONS_FILE}.tmp-*"))  # written atomically, nothing left over


def test_an_accepted_pair_is_linked_by_the_next_run(stewarded):
    left, right = _pair(stewarded, "accept_new")
    first, second = stewarded["identity_first"], pd.read_parquet(stewarded["second"] / "identity_map.parquet")
    assert _person(first, left) != _person(first, right)
    assert _person(second, left) == _person(second, right)
    links = pd.read_parquet(stewarded["second"] / "match_links.parquet")
    keys = {left.split(":", 1)[1], right.split(":", 1)[1]}
    mine = links[links["record_key_l"].isin(keys) & links["record_key_r"].isin(keys)]
    assert list(mine["reason"]) == ["accepted by a reviewer"]  # with its waterfall, like any link
    applied = _summary(stewarded["second"])["matching"]["review_decisions"]
    assert applied["must_links"] == 5 and applied["must_links_linked"] >= 1


def test_an_accepted_pair_still_obeys_the_guards_and_the_refusal_is_reported(stewarded):
    left, right = _pair(stewarded, "accept_guarded")
    second = pd.read_parquet(stewarded["second"] / "identity_map.parquet")
    assert _person(second, left) != _person(second, right)  # one person holds one Salesforce Contact
    applied = _summary(stewarded["second"])["matching"]["review_decisions"]
    assert applied["must_links_refused_by_guards"] == 1
    queue = pd.read_parquet(stewarded["second"] / "review_queue.parquet")
    keys = {left.split(":", 1)[1], right.split(":", 1)[1]}
    refused = queue[queue["record_key_l"].isin(keys) & queue["record_key_r"].isin(keys)]
    # each Contact person also holds its own user_id: whichever unique namespace binds first is named
    assert len(refused) == 1 and refused["reason"].iloc[0].startswith("guard: would give one person more ")


def test_a_rejected_link_is_not_merged_again(stewarded):
    left, right = _pair(stewarded, "reject_link")
    first, second = stewarded["identity_first"], pd.read_parquet(stewarded["second"] / "identity_map.parquet")
    assert _person(first, left) == _person(first, right)  # the matcher merged them automatically
    assert _person(second, left) != _person(second, right)
    applied = _summary(stewarded["second"])["matching"]["review_decisions"]
    assert applied["cannot_links"] == 3 and applied["cannot_links_blocked"] == 1
    lineage = pd.read_parquet(stewarded["second"] / "lineage.parquet")
    assert (lineage["event"] == "split").any()  # the persistent person split, and lineage says so


def test_a_confirmed_link_stays_and_a_rejected_pair_that_identifiers_join_is_a_conflict(stewarded):
    left, right = _pair(stewarded, "accept_link")
    second = pd.read_parquet(stewarded["second"] / "identity_map.parquet")
    assert _person(second, left) == _person(second, right)
    left, right = _pair(stewarded, "reject_joined")
    assert _person(second, left) == _person(second, right)  # a cannot-link does not cut identifiers
    conflicts = _summary(stewarded["second"])["matching"]["review_decisions"]["cannot_link_conflicts"]
    item = load_decisions(stewarded["state"]).iloc[list(stewarded["picks"]).index("reject_joined")]["item_id"]
    assert conflicts == [{"item_id": item, "joined_by": "identifiers"}]


def test_no_chain_of_links_joins_a_rejected_pair(stewarded):
    from resolver.matching.match import HELD_REASON

    first, second = _pair(stewarded, "accept_chain_1"), _pair(stewarded, "accept_chain_2")
    one, three = _pair(stewarded, "reject_chain")
    assert first[0] == one and second[1] == three and first[1] == second[0]  # L3-L4, L4-L5 accepted; L3-L5 rejected
    identity = pd.read_parquet(stewarded["second"] / "identity_map.parquet")
    assert _person(identity, one) != _person(identity, three)
    joined = [_person(identity, a) == _person(identity, b) for a, b in (first, second)]
    assert sorted(joined) == [False, True]  # the first must-link in order holds, the other is held back
    applied = _summary(stewarded["second"])["matching"]["review_decisions"]
    assert applied["links_held_by_cannot_links"] == 1
    queue = pd.read_parquet(stewarded["second"] / "review_queue.parquet")
    assert (queue["reason"] == HELD_REASON).sum() == 1


def test_decided_items_leave_the_review_list(stewarded, capsys):
    state, out = stewarded["state"], stewarded["second"]
    capsys.readouterr()
    assert main(["review", "list", "--state", str(state), "--out", str(out), "--all", "--json", "--links", "1000",
                 "--limit", "100000"]) == EXIT_OK
    everything = json.loads(capsys.readouterr().out)
    assert main(["review", "list", "--state", str(state), "--out", str(out), "--json", "--links", "1000",
                 "--limit", "100000"]) == EXIT_OK
    open_items = json.loads(capsys.readouterr().out)
    decided = [i for i in everything if i["decision"]]
    assert decided and len(open_items) == len(everything) - len(decided)
    assert {i["decision"] for i in decided} <= {"accept", "reject"}
    # without --out the state's last run names the outputs
    assert main(["review", "list", "--state", str(state), "--json"]) == EXIT_OK
    assert json.loads(capsys.readouterr().out) == [i for i in open_items if i["kind"] == "review"][:20]


def test_a_decision_about_an_unknown_record_is_refused(stewarded, capsys):
    code = main(["review", "decide", "--state", str(stewarded["state"]), "--out", str(stewarded["second"]),
                 "--pair", "no-such-key", "0035g0000Q7014K", "--accept"])
    assert code == EXIT_CONFIG
    assert "no record with key 'no-such-key'" in capsys.readouterr().err
    assert len(load_decisions(stewarded["state"])) == 8


def test_history_has_a_row_per_run_with_the_estimated_false_positive_rate(stewarded):
    history = load_history(stewarded["state"])
    assert len(history) == 2
    first, second = history.iloc[0], history.iloc[1]
    assert first["decisions"] == 0 and pd.isna(first["estimated_fp_rate"])
    # two automatic merges were decided: one rejected, one confirmed
    assert second["decisions"] == 8 and second["auto_merge_decided"] == 2
    assert second["estimated_fp_rate"] == 0.5
    summary = _summary(stewarded["second"])
    assert second["persons"] == summary["persons"]["total"]
    assert second["merged"] == summary["persistent_ids"]["merged_away"]
    assert second["split"] == summary["persistent_ids"]["split_off"] >= 1
    assert second["review_queue"] == len(pd.read_parquet(stewarded["second"] / "review_queue.parquet"))
    assert second["rejected_rows"] == summary["rows"]["rejected"]
    # counts only: no record keys or identifier values
    assert not [c for c in history.columns if "key" in c or "value" in c or "email" in c]
