"""An incremental run (state: memo, pairs, model) gives what a full re-run with the same model gives
on the same data: the same partition of records into persons and the same golden records, while
normalizing and comparing only what changed."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from resolver.cli import EXIT_OK, main
from resolver.synth.people import generate

pytestmark = pytest.mark.slow  # generates data and runs the pipeline several times


def _change_sources(root):
    """New contacts (copies with new ids, some with a typo or a new email), changed ones, deleted
    ones (IsDeleted) and removed rows."""
    path = min((root / "salesforce").glob("Contact*.csv"))
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    id_col = frame.columns[0]
    rng = np.random.default_rng(3)
    n = len(frame)
    new = frame.sample(n=max(n // 30, 5), random_state=1).copy()
    new[id_col] = [f"0035g0000Z{i:05d}AAA" for i in range(len(new))]
    first = new.columns[2]
    new[first] = new[first].str[:-1] + "e"  # a typo: they must match on attributes, not only ids
    new.iloc[::2, 4] = [f"new{i}@example.org" for i in range(len(new.iloc[::2]))]  # a new email too
    changed = rng.choice(n, size=max(n // 50, 3), replace=False)
    frame.iloc[changed, 7] = frame.iloc[changed, 7] + " Apt 2"  # street changed
    deleted = rng.choice(np.setdiff1d(np.arange(n), changed), size=max(n // 100, 2), replace=False)
    frame.iloc[deleted, 13] = "true"
    removed = rng.choice(np.setdiff1d(np.arange(n), np.concatenate([changed, deleted])), size=max(n // 100, 2), replace=False)
    frame = pd.concat([frame.drop(frame.index[removed]), new], ignore_index=True)
    frame.to_csv(path, index=False, quoting=1)


def _partition(out) -> dict:
    identity = pd.read_parquet(out / "identity_map.parquet")
    active = identity[identity["person_id"].notna()]
    groups = active.groupby("person_id")["record_key"].agg(lambda k: frozenset(k))
    return groups.to_dict()


def _golden_by_members(out) -> dict:
    members = _partition(out)
    golden = pd.read_parquet(out / "golden_records.parquet").set_index("person_id")
    return {members[p]: tuple(row.drop(labels=["conflicting_fields"]).astype(str)) for p, row in golden.iterrows()
            if p in members}


def test_incremental_run_equals_a_full_rerun(tmp_path):
    generate(tmp_path, 2500, seed=8, workers=1)
    config = tmp_path / "resolver.yaml"
    state = tmp_path / "state"
    assert main(["run", "--config", str(config), "--state", str(state), "-q"]) == EXIT_OK
    model = tmp_path / "model.json"
    shutil.copy(tmp_path / "out" / "model.json", model)

    _change_sources(tmp_path)
    assert main(["run", "--config", str(config), "--state", str(state), "-q"]) == EXIT_OK
    incremental = json.loads((tmp_path / "out" / "run_summary.json").read_text())
    full_out = tmp_path / "full"
    assert main(["run", "--config", str(config), "--out", str(full_out), "--model", str(model), "-q"]) == EXIT_OK
    full = json.loads((full_out / "run_summary.json").read_text())

    inc = incremental["incremental"]
    assert inc["incremental"] and inc["normalization"]["remembered_share"] > 0.8
    assert 0 < inc["pairs_compared"] < full["matching"]["candidate_pairs"] / 2
    assert inc["pairs_compared"] + inc["pairs_reused"] == full["matching"]["candidate_pairs"]
    assert incremental["matching"]["decisions"] == full["matching"]["decisions"]
    blocking = next(s for s in incremental["stages"] if s["stage"] == "match:blocking")
    assert 0 < blocking["keyed_again"] < incremental["rows"]["resolved"] / 5  # only new or changed records

    assert len(_partition(tmp_path / "out")) == len(_partition(full_out))
    assert set(_partition(tmp_path / "out").values()) == set(_partition(full_out).values())
    inc_golden = _golden_by_members(tmp_path / "out")
    full_golden = _golden_by_members(full_out)
    assert inc_golden.keys() == full_golden.keys()
    # Same values and provenance field by field (the person id column differs: ids persist).
    differing = [k for k in inc_golden if inc_golden[k] != full_golden[k]]
    assert not differing

    # Deleted and removed contacts are honoured: no active record of theirs remains.
    identity = pd.read_parquet(tmp_path / "out" / "identity_map.parquet")
    assert (identity["status"] == "deleted").sum() >= 2
