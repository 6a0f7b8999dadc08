"""Tests for ``generate(..., events=False)`` / ``resolver generate --no-events``: CRM-only datasets."""

from __future__ import annotations

from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pytest

from resolver.cli import main
from resolver.config import load_config
from resolver.synth.people import EVENTS_SCHEMA, generate

pytestmark = pytest.mark.slow  # generates datasets

PEOPLE, SEED, CHUNK = 3000, 11, 1000
CRM_FILES = ["salesforce/Contact_a.csv", "salesforce/Contact_b.csv", "salesforce/Lead.csv", "truth/records.parquet"]


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> tuple[Path, Path, dict, dict]:
    with_events, without = tmp_path_factory.mktemp("with_events"), tmp_path_factory.mktemp("without_events")
    full = generate(with_events, PEOPLE, seed=SEED, chunk_people=CHUNK, workers=1)
    crm = generate(without, PEOPLE, seed=SEED, chunk_people=CHUNK, workers=1, events=False)
    return with_events, without, full, crm


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_crm_bytes_identical_with_and_without_events(pair):
    with_events, without, _, _ = pair
    for name in CRM_FILES:
        assert (with_events / name).read_bytes() == (without / name).read_bytes(), name


def test_no_segment_files_and_empty_events_truth(pair):
    _, without, full, crm = pair
    assert not (without / "segment").exists()
    events = pq.read_table(without / "truth" / "events.parquet")
    assert events.num_rows == 0 and events.schema.equals(EVENTS_SCHEMA)
    assert crm["events"] == 0 and full["events"] > 0
    assert (crm["contacts"], crm["leads"], crm["deleted_rows"]) == (full["contacts"], full["leads"], full["deleted_rows"])


def test_manifest_lists_exactly_the_files_written(pair):
    with_events, without, full, crm = pair
    assert orjson.loads((without / "manifest.json").read_bytes()) == crm
    assert crm["files"] == files_under(without)
    assert full["files"] == files_under(with_events)
    assert not any(name.startswith("segment/") for name in crm["files"])


def test_config_has_no_event_sources(pair):
    _, without, _, _ = pair
    config = load_config(without / "resolver.yaml")
    assert [s.name for s in config.sources] == ["sf_contacts", "sf_leads"]
    assert all(s.kind == "records" for s in config.sources)
    assert "segment" not in (without / "resolver.yaml").read_text()


def test_stale_event_files_are_removed(tmp_path):
    generate(tmp_path, 50, seed=1, workers=1)
    manifest = generate(tmp_path, 50, seed=1, workers=1, events=False)
    assert not list((tmp_path / "segment").glob("*"))
    assert pq.read_table(tmp_path / "truth" / "events.parquet").num_rows == 0
    assert manifest["files"] == files_under(tmp_path)


def test_cli_no_events(tmp_path):
    out = tmp_path / "cli"
    # The CLI uses the default chunk size, so compare against the same-size library call made here.
    assert main(["generate", "--people", "300", "--seed", "4", "--out", str(out), "--workers", "1",
                 "--no-events", "--quiet"]) == 0
    ref = generate(tmp_path / "ref", 300, seed=4, workers=1, events=False)
    assert not (out / "segment").exists()
    assert orjson.loads((out / "manifest.json").read_bytes()) == ref
    for name in CRM_FILES:
        assert (out / name).read_bytes() == (tmp_path / "ref" / name).read_bytes(), name
