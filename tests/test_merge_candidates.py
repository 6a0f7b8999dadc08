"""Guard-refused pairs of one Salesforce object become merge candidates for Salesforce's merge tools:
the survivor chosen by survivorship, a CSV beside the Parquet table, linked from the report, and
erased with the person."""

import pandas as pd
import pytest

from resolver.cli import EXIT_OK, main
from resolver.synth.people import generate


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("merge")
    generate(root, 400, seed=3, workers=1, events=False)
    assert main(["run", "--config", str(root / "resolver.yaml"), "--state", str(root / "state"), "-q"]) == EXIT_OK
    return root


def _modified(root) -> dict:
    """Record key -> LastModifiedDate, from the Contact files as written."""
    out = {}
    for path in sorted((root / "salesforce").glob("Contact*.csv")):
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        frame.columns = [c.lower() for c in frame.columns]
        out.update(zip(frame["id"], pd.to_datetime(frame["lastmodifieddate"], utc=True)))
    return out


def test_refused_duplicates_of_one_object_are_listed_survivor_first(run):
    out = run / "out"
    candidates = pd.read_parquet(out / "merge_candidates.parquet")
    assert len(candidates) >= 1
    queue = pd.read_parquet(out / "review_queue.parquet")
    refused = queue[queue["reason"].str.startswith("guard") & queue["source_l"].eq(queue["source_r"])]
    assert len(candidates) == len(refused)  # every guard-refused Contact pair, and nothing else
    modified = _modified(run)
    for row in candidates.itertuples():
        assert row.object == "Contact" and row.MasterRecordId[:3] == row.DuplicateRecordId[:3] == "003"
        assert row.reason.startswith("guard:") and row.master_person_id != row.duplicate_person_id
        assert modified[row.MasterRecordId] >= modified[row.DuplicateRecordId]  # the newer survives (same source)
    assert candidates["probability"].is_monotonic_decreasing
    as_csv = pd.read_csv(out / "merge_candidates.csv", dtype={"MasterRecordId": str, "DuplicateRecordId": str})
    pd.testing.assert_frame_equal(as_csv[["object", "MasterRecordId", "DuplicateRecordId"]],
                                  candidates[["object", "MasterRecordId", "DuplicateRecordId"]])
    page = (out / "report.html").read_text()
    assert 'href="merge_candidates.csv"' in page and "duplicates to merge in Salesforce" in page


def test_forgetting_a_record_drops_its_merge_candidates(run):
    out = run / "out"
    first = pd.read_parquet(out / "merge_candidates.parquet").iloc[0]
    assert main(["forget", "--config", str(run / "resolver.yaml"), "--state", str(run / "state"),
                 "--record", first["DuplicateRecordId"], "-q"]) == EXIT_OK
    after = pd.read_parquet(out / "merge_candidates.parquet")
    assert first["DuplicateRecordId"] not in set(after["DuplicateRecordId"]) | set(after["MasterRecordId"])
    assert first["DuplicateRecordId"] not in (out / "merge_candidates.csv").read_text()
