"""The plain shape: `resolver generate --shape people` (resolver/synth/plain.py)."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from resolver.cli import EXIT_CONFIG, EXIT_OK, main
from resolver.synth.plain import (
    COLUMNS, FIRST_VOCABULARY, LAST_VOCABULARY, NULL_RATES, RECORDS_PER_PERSON, first_vocabulary, generate_people,
    last_vocabulary,
)

# Measured pairwise F1 of the end-to-end run below (2,000 people, seed 5): 0.969. The floor leaves a
# small margin for model changes; a broken generator, config or matcher falls well below it.
E2E_PEOPLE, E2E_SEED, E2E_MIN_F1 = 2000, 5, 0.94


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    out = tmp_path_factory.mktemp("plain")
    manifest = generate_people(out, 6000, seed=3, chunk_people=2500, workers=1)
    return out, manifest, pq.read_table(out / "people.parquet"), pq.read_table(out / "truth" / "records.parquet")


def test_byte_identical_for_any_workers(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    generate_people(one, 900, seed=4, chunk_people=300, workers=1)
    generate_people(two, 900, seed=4, chunk_people=300, workers=2)
    for name in ("people.parquet", "truth/records.parquet", "resolver.yaml", "manifest.json"):
        assert (one / name).read_bytes() == (two / name).read_bytes(), name
    other = tmp_path / "other"
    generate_people(other, 900, seed=5, chunk_people=300, workers=1)
    assert (other / "people.parquet").read_bytes() != (one / "people.parquet").read_bytes()


def test_columns_types_and_null_shares(small):
    _, manifest, people, _ = small
    assert people.column_names == COLUMNS
    assert all(str(t) == "string" for t in people.schema.types)
    assert people["unique_id"].null_count == 0
    assert pc.count_distinct(people["unique_id"]).as_py() == people.num_rows == manifest["records"]
    for column, rate in NULL_RATES.items():
        share = people[column].null_count / people.num_rows
        assert abs(share - rate) < 0.02, (column, share)
        assert manifest["nulls"][column] == people[column].null_count
    births = people["birth_date"].drop_null()
    assert pc.all(pc.match_substring_regex(births, r"^(19|20)\d\d-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])$")).as_py()
    assert pc.min(pc.cast(births, "date32")).as_py().year >= 1949  # every date parses
    # Raw values with noise: some emails upper-cased, phones in several formats.
    emails = people["email"].drop_null()
    assert pc.any(pc.not_equal(emails, pc.utf8_lower(emails))).as_py()
    assert pc.count_distinct(pc.replace_substring_regex(people["phone"].drop_null(), r"\d", "#")).as_py() >= 8


def test_records_per_person_as_documented(small):
    _, manifest, people, truth = small
    sizes = np.bincount(truth["person_id"].to_numpy())
    assert sizes.min() >= 1 and sizes.max() <= len(RECORDS_PER_PERSON) and len(sizes) == manifest["people"]
    share = np.bincount(sizes, minlength=len(RECORDS_PER_PERSON) + 1)[1:] / len(sizes)
    assert np.allclose(share, RECORDS_PER_PERSON, atol=0.02), share
    assert abs(people.num_rows / len(sizes) - 1.43) < 0.03
    assert manifest["records_per_person"]["people"] == {k + 1: int(v) for k, v in enumerate(share * len(sizes))}


def test_truth_joins_every_row(small):
    _, _, people, truth = small
    assert truth.column_names == ["source", "record_key", "person_id"]
    assert str(truth.schema.field("person_id").type) == "int64"
    assert pc.all(pc.equal(truth["source"], "people")).as_py()
    assert truth["record_key"].to_pylist() == people["unique_id"].to_pylist()
    # Records of one person share their birth date or email most of the time: the truth is not random.
    frame = people.append_column("person_id", truth["person_id"]).to_pandas()
    dup = frame[frame.duplicated("person_id", keep=False)].dropna(subset=["birth_date"])
    agree = dup.groupby("person_id")["birth_date"].nunique().eq(1).mean()
    assert agree > 0.85


def test_distinct_names_grow_with_people(tmp_path):
    assert len(first_vocabulary().names) == FIRST_VOCABULARY >= 2000
    assert len(last_vocabulary().names) == LAST_VOCABULARY >= 20_000
    assert pc.count_distinct(last_vocabulary().names).as_py() == LAST_VOCABULARY
    assert pc.count_distinct(first_vocabulary().names).as_py() == FIRST_VOCABULARY
    tail = last_vocabulary().names[200:].to_pylist()
    assert all(name.isascii() and name.isalpha() for name in tail)
    distinct = []
    for people in (2_000, 20_000):
        generate_people(tmp_path / str(people), people, seed=1, workers=1)
        table = pq.read_table(tmp_path / str(people) / "people.parquet", columns=["last_name"])
        distinct.append(pc.count_distinct(table["last_name"]).as_py())
        # The commonest surname holds a small share, as in census data (Smith ~1%), not 1/130.
        counts = table["last_name"].drop_null().value_counts().field("counts").to_numpy()
        assert counts.max() / counts.sum() < 0.03
    assert distinct[1] > 4 * distinct[0] > 4_000, distinct


def test_cli_refuses_crm_only_options(tmp_path):
    assert main(["generate", "--shape", "people", "--people", "10", "--out", str(tmp_path / "a"),
                 "--no-events", "-q"]) == EXIT_CONFIG
    assert not (tmp_path / "a" / "people.parquet").exists()
    assert main(["generate", "--shape", "people", "--people", "10", "--out", str(tmp_path / "b"), "-q"]) == EXIT_OK
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["shape"] == "people" and manifest["people"] == 10


@pytest.mark.slow
def test_end_to_end_run_and_evaluate(tmp_path, capsys):
    out = tmp_path / "data"
    assert main(["generate", "--shape", "people", "--people", str(E2E_PEOPLE), "--seed", str(E2E_SEED),
                 "--out", str(out), "--workers", "1", "-q"]) == EXIT_OK
    config = out / "resolver.yaml"
    assert main(["run", "--config", str(config), "-q"]) == EXIT_OK
    capsys.readouterr()
    assert main(["evaluate", "--config", str(config), "--truth", str(out / "truth")]) == EXIT_OK
    metrics = json.loads(capsys.readouterr().out)
    records = metrics["records"]
    assert records["entities"] == pq.read_metadata(out / "people.parquet").num_rows
    assert records["pairwise_f1"] >= E2E_MIN_F1, records
    assert metrics["matching"]["blocking_recall"] > 0.7
