"""Pairs made bucket by bucket (too many to hold at once) give the outputs of holding them all:
the same model, scores, links, review queue and golden records, on both engines."""

import json

import numpy as np
import pandas as pd
import pytest
import yaml
from _outputs import assert_same_outputs, generated_with_baseline

from resolver.cli import EXIT_OK, main
from resolver.matching.compare import prepare
from resolver.config import ComparisonConfig
from resolver.compute.engine import LOCAL
from resolver.matching.pairs import (
    bucket_jobs,
    bucket_pairs,
    pattern_statistics,
)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = generated_with_baseline(tmp_path_factory.mktemp("streamed"), 1500, seed=43)
    body = yaml.safe_load((root / "resolver.yaml").read_text())
    body["matching"]["stream_above_pairs"] = 0  # always bucket by bucket
    (root / "streamed.yaml").write_text(yaml.safe_dump(body, sort_keys=False))
    return root


def _run(world, out, *extra) -> dict:
    assert main(["run", "--config", str(world / "streamed.yaml"), "--out", str(out), "-q", "--backend", "cpu",
                 *extra]) == EXIT_OK
    return json.loads((out / "run_summary.json").read_text())


@pytest.mark.slow
def test_streamed_pairs_give_the_outputs_of_holding_them_all(world, monkeypatch):
    from resolver.compute import engine

    monkeypatch.setattr(engine, "ROWS_PER_BUCKET", 300)  # several buckets per rule
    summary = _run(world, world / "streamed-local")
    streamed = summary["matching"]["streamed"]
    assert streamed["passes"] == 2 and streamed["buckets"] > 1
    # the scoring pass reads the levels the first pass kept: every pair is compared once
    assert streamed["pair_comparisons"] == summary["matching"]["candidate_pairs"] > 0
    assert_same_outputs(world / "local", world / "streamed-local", model=True)
    whole = json.loads((world / "local" / "run_summary.json").read_text())["matching"]
    for key in ("candidate_pairs", "pairs_per_rule", "weight_histogram", "decisions"):
        assert summary["matching"][key] == whole[key], key


@pytest.mark.slow
def test_the_dask_engine_streams_its_buckets_too(world, monkeypatch):
    pytest.importorskip("distributed")
    from resolver.compute import engine

    monkeypatch.setattr(engine, "ROWS_PER_BUCKET", 300)
    summary = _run(world, world / "streamed-dask", "--engine", "dask", "--workers", "2")
    assert summary["matching"]["streamed"]["buckets"] > 4
    # a cluster's tasks share no disk: the scoring pass compares every pair again
    assert summary["matching"]["streamed"]["pair_comparisons"] == 2 * summary["matching"]["candidate_pairs"]
    assert summary["engine"]["pair_buckets"] == summary["matching"]["streamed"]["buckets"]
    assert_same_outputs(world / "local", world / "streamed-dask", model=True)


@pytest.mark.slow
def test_a_loaded_model_scores_in_one_pass(world, tmp_path):
    summary = _run(world, tmp_path / "out", "--model", str(world / "local" / "model.json"))
    assert summary["matching"]["streamed"]["passes"] == 1
    assert summary["matching"]["streamed"]["pair_comparisons"] == summary["matching"]["candidate_pairs"]
    assert_same_outputs(world / "local", tmp_path / "out", tables=("scored_pairs", "match_links", "review_queue"))


def test_every_candidate_pair_is_made_in_exactly_one_bucket():
    """However many buckets, the buckets' pairs together are the same pairs, none twice."""
    rng = np.random.default_rng(7)
    keys = rng.integers(0, 40, size=(3, 400)).astype(np.uint64)  # 0: no key for that rule
    labels = rng.integers(0, 300, size=400).astype(np.int64)
    prepared = [prepare(ComparisonConfig(name="c", column="c", method="exact"),
                        {"c": pd.Series(rng.choice(["a", "b", None], size=400), dtype="str")})]
    made = {}
    for buckets in (1, 3, 7):
        pairs = [(job[3], int(a), int(b)) for job in bucket_jobs(keys, labels, prepared, buckets)
                 for a, b in zip(*bucket_pairs(*job)[:2])]
        assert len(pairs) == len(set(pairs))
        made[buckets] = set(pairs)
        per_rule, _ = pattern_statistics(LOCAL, keys, labels, prepared, buckets)
        assert per_rule == [sum(1 for r, _, _ in pairs if r == rule) for rule in range(3)]
    assert made[1] == made[3] == made[7] and len(made[1]) > 100
