"""Comparing two runs' written outputs, and a generated dataset with a baseline run: what the
engine, piece and snapshot tests all check ("this way of running gives that run's outputs")."""

import json
from pathlib import Path

import pandas as pd

from resolver.cli import EXIT_OK, main
from resolver.synth.people import generate

OUTPUT_TABLES = ("identity_map", "identifier_map", "persons", "golden_records", "conflicts", "scored_pairs",
                 "review_queue", "match_links", "policy_actions", "rejects", "blocking_keys")


def assert_same_outputs(a: Path, b: Path, tables=OUTPUT_TABLES, model: bool = False) -> None:
    """Every named output table is frame-identical; with `model`, so is model.json (less timing)."""
    for name in tables:
        pd.testing.assert_frame_equal(pd.read_parquet(a / f"{name}.parquet"), pd.read_parquet(b / f"{name}.parquet"),
                                      obj=name)
    if model:
        model_a = json.loads((a / "model.json").read_text())
        model_b = json.loads((b / "model.json").read_text())
        model_a["training"].pop("seconds"), model_b["training"].pop("seconds")
        assert model_a == model_b


def generated_with_baseline(root: Path, people: int, seed: int) -> Path:
    """Generate `people` into root and resolve them on the local engine into root / "local"."""
    generate(root, people, seed=seed, workers=1)
    assert main(["run", "--config", str(root / "resolver.yaml"), "--out", str(root / "local"), "-q",
                 "--backend", "cpu"]) == EXIT_OK
    return root
