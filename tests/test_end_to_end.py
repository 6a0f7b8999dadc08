"""End to end on generated Salesforce + Segment data with junk ids, kiosks, households and shared phones."""

import json

import pandas as pd
import pytest

from resolver.config import load_config
from resolver.outputs.evaluate import evaluate_outputs
from resolver.pipeline import run

pytestmark = pytest.mark.slow  # the generated dataset and whole-pipeline runs (conftest)


@pytest.fixture(scope="module")
def metrics(resolved, generated):
    config, _ = resolved
    return evaluate_outputs(config.output_path(), generated / "truth", config)


def test_every_row_is_accounted_for(resolved):
    config, res = resolved
    summary = json.loads((config.output_path() / "run_summary.json").read_text())
    assert summary["rows"]["accounted"]
    assert summary["rows"]["read"] == summary["rows"]["resolved"] + summary["rows"]["rejected"]
    assert all(s["accounted"] for s in summary["sources"].values())
    manifest = json.loads((config.base_dir / "manifest.json").read_text())
    assert summary["rows"]["read"] == manifest["contacts"] + manifest["leads"] + manifest["events"]


def test_guarded_deterministic_precision_is_at_least_99_percent(metrics):
    assert metrics["records"]["pairwise_precision"] >= 0.99
    assert metrics["events"]["pairwise_precision"] >= 0.99
    assert metrics["all"]["pairwise_precision"] >= 0.99
    # and the graph really links things: most true pairs are found deterministically
    assert metrics["records"]["pairwise_recall"] >= 0.5
    assert metrics["events"]["pairwise_recall"] >= 0.5


def test_precision_falls_when_the_guards_are_switched_off(resolved, generated, metrics, tmp_path):
    config = load_config(generated / "resolver.yaml")
    config.identity.guards = False
    config.run.output_dir = str(tmp_path / "out-unguarded")
    run(config)
    unguarded = evaluate_outputs(config.output_path(), generated / "truth", config)
    assert unguarded["all"]["pairwise_precision"] < metrics["all"]["pairwise_precision"] - 0.01
    assert unguarded["all"]["overmerged_clusters"] > metrics["all"]["overmerged_clusters"]


def test_guards_report_what_they_did(resolved):
    config, res = resolved
    actions = pd.read_parquet(config.output_path() / "policy_actions.parquet")
    kinds = set(actions["action"])
    assert {"blocked", "hub_capped", "limit_cut"} <= kinds
    blocked = actions[actions["action"] == "blocked"]
    assert "test@test.com" in set(blocked["value"])
    assert {"anonymous", "null", "-1"} & set(blocked["value"])
    hubs = actions[actions["action"] == "hub_capped"]
    assert (hubs["id_type"].isin(["device_id", "anonymous_id"])).any()


def test_outputs_have_their_schemas(resolved):
    config, res = resolved
    out = config.output_path()
    identity = pd.read_parquet(out / "identity_map.parquet")
    assert {"record_id", "source", "record_key", "source_key", "person_id", "status", "linked_by"} <= set(identity.columns)
    assert identity["status"].isin(["active", "merged", "deleted"]).all()
    assert identity.loc[identity["status"] == "active", "person_id"].notna().all()
    assert identity.loc[identity["status"] == "deleted", "person_id"].isna().all()
    ids = pd.read_parquet(out / "identifier_map.parquet")
    assert {"id_type", "value", "person_id", "status"} <= set(ids.columns)
    assert not ids.duplicated(["id_type", "value"]).any()
    persons = pd.read_parquet(out / "persons.parquet")
    assert persons["person_id"].is_unique
    assert set(identity["person_id"].dropna()) <= set(persons["person_id"])
    # 18-char Salesforce ids everywhere, whatever form the export used
    sf = identity[identity["source"].str.startswith("sf_")]
    assert (sf["source_key"].str.len() == 18).all()


def test_unique_namespaces_hold_in_the_output(resolved):
    config, _ = resolved
    out = config.output_path()
    ids = pd.read_parquet(out / "identifier_map.parquet")
    users = ids[(ids["status"] == "linked") & (ids["id_type"] == "user_id")]
    assert users.groupby("person_id").size().max() == 1
    # A person holds one live Salesforce Contact; merged-away contacts follow their master.
    identity = pd.read_parquet(out / "identity_map.parquet")
    live = identity[(identity["source"] == "sf_contacts") & (identity["status"] == "active")]
    assert live.groupby("person_id").size().max() == 1
    merged = identity[identity["status"] == "merged"]
    assert len(merged) > 0 and merged["person_id"].notna().all()


def test_same_input_gives_the_same_persons_in_one_process_or_several(resolved, generated, tmp_path):
    config, first = resolved
    assert config.run.workers == 2
    again = load_config(generated / "resolver.yaml")
    again.run.output_dir = str(tmp_path / "again")
    again.run.workers = 1
    second = run(again)
    pd.testing.assert_frame_equal(first.identity_map, second.identity_map)
    pd.testing.assert_frame_equal(first.identifier_map, second.identifier_map)
    pd.testing.assert_frame_equal(first.persons, second.persons)
    pd.testing.assert_frame_equal(first.policy_actions, second.policy_actions)
