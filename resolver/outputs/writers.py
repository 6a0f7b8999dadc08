"""Outputs: Parquet tables plus run_summary.json, written atomically.

Everything is written into a fresh sibling folder first and swapped into place only when complete,
so a run that fails half way leaves the previous outputs untouched.
"""

from __future__ import annotations

import json
import shutil
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd

from resolver.outputs.duckdb_out import DUCKDB_FILE, write_duckdb
from resolver.state.files import swap_into_place

OUTPUT_TABLES = {
    "identity_map": "identity_map.parquet",
    "identifier_map": "identifier_map.parquet",
    "persons": "persons.parquet",
    "golden_records": "golden_records.parquet",
    "conflicts": "conflicts.parquet",
    "policy_actions": "policy_actions.parquet",
    "rejects": "rejects.parquet",
    "lineage": "lineage.parquet",  # with a state: every merge and split so far
    # probabilistic matching (written when it ran)
    "match_links": "match_links.parquet",
    "review_queue": "review_queue.parquet",
    "merge_candidates": "merge_candidates.parquet",  # also merge_candidates.csv, for Salesforce's merge tools
    "scored_pairs": "scored_pairs.parquet",
    "blocking_keys": "blocking_keys.parquet",
    # anonymous visitor stitching (written when it ran)
    "anonymous_map": "anonymous_map.parquet",
    "stitch_review": "stitch_review.parquet",
}


WRITERS = 2  # tables written at once


def _write_table(frame: pd.DataFrame, path: Path) -> None:
    frame.reset_index(drop=True).to_parquet(path, index=False)


def write_outputs(out_dir: Path, resolution, files: dict[str, str] | None = None, duckdb: bool = False) -> None:
    """Write every output table, the summary and `files` (name -> text: report.html), and with
    `duckdb` the tables as one DuckDB database; replace `out_dir` only once all are written."""
    out_dir = Path(out_dir)
    staging = out_dir.parent / f".{out_dir.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        stage_outputs(staging, resolution, files, duckdb)
        swap_into_place(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def stage_outputs(staging: Path, resolution, files: dict[str, str] | None = None, duckdb: bool = False) -> None:
    """Write every output table, the summary and `files` into the new folder `staging` (and with
    `duckdb`, resolver.duckdb: outputs/duckdb_out.py)."""
    staging.parent.mkdir(parents=True, exist_ok=True)
    staging.mkdir()
    # Parquet encoding releases the GIL: the tables are written side by side, a few at a time
    # (each holds its Arrow copy and encoded pages while it is written: memory).
    tables = {attr: frame for attr in OUTPUT_TABLES if (frame := getattr(resolution, attr, None)) is not None}
    # The biggest tables first, so that the writers finish together (golden records alone is a third).
    biggest_first = sorted(tables, key=lambda attr: -tables[attr].size)
    with ThreadPoolExecutor(max_workers=WRITERS) as pool:
        writes = [pool.submit(_write_table, tables[attr], staging / OUTPUT_TABLES[attr]) for attr in biggest_first]
        for write in writes:
            write.result()
    if getattr(resolution, "model", None) is not None:
        resolution.model.save(staging / "model.json")
    for name, text in (files or {}).items():
        (staging / name).write_text(text, encoding="utf-8")
    if duckdb:
        write_duckdb(staging)
    (staging / "run_summary.json").write_text(json.dumps(resolution.summary, indent=2, default=str))


def stage_rewrite(out_dir: Path, staging: Path, tables: dict[str, pd.DataFrame],
                  files: dict[str, str] | None = None) -> None:
    """Copy the output folder to the new folder `staging` and rewrite some tables and `files` there."""
    shutil.copytree(out_dir, staging)
    for name, frame in tables.items():
        _write_table(frame, staging / OUTPUT_TABLES[name])
    for name, text in (files or {}).items():
        (staging / name).write_text(text, encoding="utf-8")
    if (staging / DUCKDB_FILE).exists():  # rebuilt from the rewritten tables
        write_duckdb(staging)
