"""Splink (DuckDB) vs resolver on the same generated data (CRM or plain person file): speed, memory and accuracy.

    .venv/bin/python benchmarks/compare_splink.py                          # 100k, 1M and 5M records
    .venv/bin/python benchmarks/compare_splink.py --sizes 100k --skip-resolver
    .venv/bin/python benchmarks/compare_splink.py --sizes 1m --timeout 7200 --seed 1
    .venv/bin/python benchmarks/compare_splink.py --shape people --sizes 100k,1m   # the plain person file

Options: --shape (crm, the default, or people), --sizes (comma list of 100k, 1m, 5m), --seed (data
seed, default 1), --repeat (runs of each tool, alternating; wall time and peak RSS are the median),
--skip-splink,
--skip-resolver, --timeout (seconds per tool run, default 3600), --splink-memory-limit (DuckDB
memory_limit, default 12GB), --splink-em-max-pairs (Splink 5's EM sampling, default 1e7 pairs per
pass; 0 = all blocked pairs), --max-rss-gb (kill a tool whose process tree passes this; default 90% of RAM),
--min-free-disk-gb (kill a tool when the data disk gets fuller; default 8), --data and --results.

Both tools' configurations are printed first: the resolver YAML (its prepared.parquet path is per
size) and the Splink settings in short (splink_runner.py --print-settings: blocking rules as DuckDB
SQL, comparison levels, training recipe).

For each size:

1. Data (cached under benchmarks/data/compare_splink/<size>-seed<seed>/, untimed): ``resolver
   generate --no-events`` with enough people for about 100k / 1M / 5M live CRM rows (1.049 live rows
   per person), then ONE prepared table both tools read, ``prepared.parquet``: one row per live record
   (IsDeleted rows and rows without a truth person dropped) with unique_id (= source ":" Id as
   written), source, first_name, last_name, email, phone, birth_date, street, city, postal_code,
   company, cleaned the same way for both tools: names with resolver.normalize.normalize_name
   (ASCII-folded, lower case, titles/suffixes dropped), email with normalize_email, phone as E.164
   with normalize_phone (Phone, else MobilePhone when Phone is missing or invalid), street and city
   lower-cased with whitespace collapsed and trimmed, postal_code and company trimmed, birth_date an
   ISO date string (leads have none); empty -> null. ``truth.parquet`` holds unique_id -> person_id.
   With ``--shape people`` the data is cached under <data>/people-<size>-seed<seed>/: ``resolver
   generate --shape people`` with enough people for the target records (1.43 records per person,
   resolver/synth/plain.py), prepared into the same columns with the same cleaning: unique_id as
   generated, source "people", postal_code from postcode, phone from the one phone column, street
   and company null. The street comparison is left out for both tools on this shape (no values:
   resolver's model health check refuses an always-missing comparison; Splink would give it no
   weight); blocking rules and the other comparisons are the same as for the CRM shape.
2. Splink 5.0.0 in its own virtualenv (benchmarks/.venv-splink, created on first use with
   ``python3 -m venv`` + ``pip install splink==5.0.0 psutil pyarrow pandas``) runs
   benchmarks/splink_runner.py: dedupe_only, the seven prediction blocking rules below, tutorial-style
   training (prior from deterministic rules with recall 0.7, u by random sampling with max_pairs=1e7,
   EM blocked on first_name+last_name and on postal_code, each pass sampled down to about 1e7 pairs
   with Splink 5's own EM max_pairs: postal_code alone blocks 1.25e8 pairs at 1M records and 3e9 at
   5M; at 100k neither pass reaches 1e7), predict, connected components at 0.85.
3. resolver runs ``resolver run --config`` on a config written next to its outputs (records source
   over prepared.parquet, email/phone identifiers, the probabilistic ``matching:`` section with the
   same blocking rules and comparisons, auto_merge 0.85).

Blocking rules (both tools): first_name+last_name, last_name+birth_date, email, last 7 phone digits,
last_name+postal_code, first_name+postal_code, first 3 letters of first and last name + city.

Measurement: each tool is a subprocess run alone (never concurrently); wall time covers reading
prepared.parquet through writing its outputs; peak RSS is the highest sum of RSS over the process
tree, sampled every 0.1 s, or the kernel's max RSS of the largest single process if higher. A run that
passes --timeout or --max-rss-gb (or leaves less than --min-free-disk-gb free: DuckDB spills to
disk past its memory_limit) is killed and reported as "timeout" / "oom" / "disk full"; DuckDB's own
out-of-memory error is reported as "oom" too.

Metrics (same code for both tools, in this process): pairwise precision / recall / F1 of the links
with probability >= 0.85 before clustering (recall over all true pairs among the prepared records;
resolver scores only pairs across its deterministic email/phone groups, so its links are the pairs
inside those groups plus its accepted links (probability >= 0.85 and decision "link": a pair a
guard or a must-agree comparison refused goes to its review queue instead); the scored links alone
are in the JSON as pairwise.scored_links_only);
the pairs implied by the clusters (all pairs inside a predicted cluster, counted arithmetically, never
materialized); exact-match cluster precision (predicted clusters equal to a true cluster / predicted
clusters), recall (/ true clusters) and F1, singletons counted as clusters; largest cluster.

Output: a table on stdout (one row per size and tool, plus a splink/resolver ratio row for time and
memory; per tool the wall time, peak RSS, P / R / F1 and per-stage seconds: Splink's stats.json
phases read, train_prior, train_u, train_em_name, train_em_postcode, blocking, predict, cluster,
write; resolver's run_summary.json stages and its total ``seconds``) and
benchmarks/results/compare_splink-<date>.json (compare_splink-people-<date>.json for --shape people). Targets at 1M records: resolver >= 5x
faster than Splink, <= half its peak memory, higher cluster F1.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from tool_runs import SPLINK_REQUIREMENTS, SPLINK_VENV, RunResult  # noqa: F401 - re-exported
from tool_runs import measure as _measure
from tool_runs import splink_python as _splink_python

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESOLVER_BIN = Path(sys.executable).parent / "resolver"

LIVE_ROWS_PER_PERSON = 1.049  # measured: live (not IsDeleted) CRM rows per generated person
SIZES = {"100k": 100_000, "1m": 1_000_000, "5m": 5_000_000}  # target prepared records
THRESHOLD = 0.85
PREPARED_COLUMNS = ["unique_id", "source", "first_name", "last_name", "email", "phone", "birth_date", "street",
                    "city", "postal_code", "company"]
BIG_CLUSTER = 10_000

RESOLVER_MATCHING = {
    "blocking": {
        "max_block_size": 500,
        "rules": [
            {"name": "full_name_city", "keys": ["first_name", "last_name", "city"]},
            {"name": "surname_dob", "keys": ["last_name", "birth_date"]},
            {"name": "email", "keys": ["email"]},
            {"name": "phone7", "keys": ["last_digits(phone, 7)"]},
            {"name": "surname_postcode", "keys": ["last_name", "postal_code"]},
            {"name": "forename_postcode", "keys": ["first_name", "postal_code"]},
            {"name": "name_prefix_city", "keys": ["prefix(first_name, 3)", "prefix(last_name, 3)", "city"]},
        ],
    },
    "comparisons": [
        {"name": "first_name", "column": "first_name", "method": "jaro_winkler", "thresholds": [0.92, 0.80],
         "nicknames": True, "tf_adjust": True, "must_agree": True},
        {"name": "last_name", "column": "last_name", "method": "jaro_winkler", "thresholds": [0.92, 0.80],
         "tf_adjust": True},
        {"name": "birth_date", "column": "birth_date", "method": "date", "years": [1, 10]},
        {"name": "email", "column": "email", "method": "email"},
        {"name": "phone", "column": "phone", "method": "phone", "digits": 7},
        {"name": "street", "column": "street", "method": "jaro_winkler", "thresholds": [0.9, 0.7]},
        {"name": "city", "column": "city", "method": "exact", "tf_adjust": True},
        {"name": "postal_code", "column": "postal_code", "method": "exact"},
    ],
    "thresholds": {"auto_merge": THRESHOLD, "review": 0.70},
}


# Comparisons left out, for both tools, where a shape has no values for them: the people shape has
# no street (resolver refuses to train on an always-missing comparison; Splink would give it no weight).
DROPPED_COMPARISONS = {"crm": (), "people": ("street",)}


def matching_for(shape: str) -> dict:
    """RESOLVER_MATCHING without the shape's dropped comparisons."""
    drop = DROPPED_COMPARISONS[shape]
    return {**RESOLVER_MATCHING, "comparisons": [c for c in RESOLVER_MATCHING["comparisons"] if c["name"] not in drop]}


def splink_drop_args(shape: str) -> list[str]:
    drop = DROPPED_COMPARISONS[shape]
    return ["--drop-comparisons", ",".join(drop)] if drop else []


def log(message: str) -> None:
    print(f"[compare_splink {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------
# Data: generate once, prepare once
# ----------------------------------------------------------------------------------------------
def people_for(records: int) -> int:
    return int(round(records / LIVE_ROWS_PER_PERSON, -2))


def people_for_shape(records: int, shape: str) -> int:
    """People to generate for about ``records`` prepared records of the shape."""
    if shape == "people":
        from resolver.synth.plain import MEAN_RECORDS_PER_PERSON

        return int(round(records / MEAN_RECORDS_PER_PERSON, -2))
    return people_for(records)


def ensure_data(size: str, seed: int, data_root: Path, shape: str = "crm") -> Path:
    """The folder holding prepared.parquet, truth.parquet and prepared.json for (shape, size, seed):
    <data>/<size>-seed<seed> for the CRM shape, <data>/people-<size>-seed<seed> for the people shape."""
    folder = data_root / (f"{size}-seed{seed}" if shape == "crm" else f"people-{size}-seed{seed}")
    if (folder / "prepared.json").exists():
        return folder
    raw = folder / "raw"
    people = people_for_shape(SIZES[size], shape)
    if not (raw / "manifest.json").exists():
        log(f"{size}: generating {people:,} people (shape {shape}, seed {seed}) into {raw}")
        start = time.perf_counter()
        shape_args = ["--no-events"] if shape == "crm" else ["--shape", "people"]
        subprocess.run([str(RESOLVER_BIN), "generate", "--people", str(people), "--seed", str(seed),
                        "--out", str(raw), *shape_args, "--quiet"], check=True)
        log(f"{size}: generated in {time.perf_counter() - start:.1f} s")
    log(f"{size}: preparing {folder / 'prepared.parquet'}")
    start = time.perf_counter()
    info = prepare(raw, folder) if shape == "crm" else prepare_people(raw, folder)
    info.update(people=people, seed=seed, size=size, prepare_seconds=round(time.perf_counter() - start, 2))
    (folder / "prepared.json").write_text(json.dumps(info, indent=2) + "\n")
    log(f"{size}: {info['records']:,} records, {info['true_pairs']:,} true pairs, prepared in "
        f"{info['prepare_seconds']:.1f} s")
    return folder


def _read_sf_csv(path: Path) -> pa.Table:
    """A Salesforce export with every column as (non-null) strings and lower-case column names."""
    with open(path, newline="", encoding="utf-8") as f:
        header = next(csv.reader(f))
    table = pacsv.read_csv(
        path,
        parse_options=pacsv.ParseOptions(newlines_in_values=True),
        convert_options=pacsv.ConvertOptions(column_types={name: pa.string() for name in header},
                                             strings_can_be_null=False, quoted_strings_can_be_null=False),
    )
    return table.rename_columns([c.lower() for c in table.column_names])


def _series(arr: pa.Array) -> pd.Series:
    from resolver.normalize import STR  # the dtype resolver.normalize works in (no conversion inside)

    return pd.Series(pd.array(arr, dtype=STR))


def _null_if_empty(arr: pa.Array) -> pa.Array:
    return pc.if_else(pc.equal(arr, ""), pa.scalar(None, pa.string()), arr)


def _clean_text(arr: pa.Array, lower: bool) -> pa.Array:
    arr = pc.replace_substring_regex(arr, r"\s+", " ")
    arr = pc.utf8_trim_whitespace(pc.utf8_lower(arr) if lower else arr)
    return _null_if_empty(arr)


def _raw_rows(raw: Path) -> pa.Table:
    """All CRM rows with the fields both tools use, raw values, plus source / Id / IsDeleted."""
    parts = []
    specs = [("Contact_a.csv", "sf_contacts", "mailing"), ("Contact_b.csv", "sf_contacts", "mailing"),
             ("Lead.csv", "sf_leads", "")]
    for name, source, prefix in specs:
        t = _read_sf_csv(raw / "salesforce" / name)
        n = t.num_rows
        empty = pa.array([""] * n, pa.string())
        parts.append(pa.table({
            "source": pa.array([source] * n, pa.string()),
            "record_key": t["id"],
            "is_deleted": t["isdeleted"],
            "first_name": t["firstname"], "last_name": t["lastname"], "email": t["email"],
            "phone_main": t["phone"], "phone_mobile": t["mobilephone"],
            "birth_date": t["birthdate"] if "birthdate" in t.column_names else empty,
            "street": t[f"{prefix}street"], "city": t[f"{prefix}city"], "postal_code": t[f"{prefix}postalcode"],
            "company": t["company"] if "company" in t.column_names else empty,
        }))
    return pa.concat_tables(parts).combine_chunks()


def prepare(raw: Path, folder: Path) -> dict:
    """Write prepared.parquet and truth.parquet from a generated CRM dataset; return counts."""
    rows = _raw_rows(raw)
    total_rows = rows.num_rows
    rows = rows.filter(pc.invert(pc.equal(pc.utf8_lower(pc.utf8_trim_whitespace(rows["is_deleted"])), "true")))
    live_rows = rows.num_rows
    truth = pq.read_table(raw / "truth" / "records.parquet").to_pandas()
    keys = pd.DataFrame({"source": rows["source"].to_numpy(zero_copy_only=False),
                         "record_key": rows["record_key"].to_numpy(zero_copy_only=False)})
    person = keys.merge(truth, on=["source", "record_key"], how="left", validate="many_to_one")["person_id"]
    has_person = person.notna().to_numpy()
    rows = rows.filter(pa.array(has_person))
    person = person[has_person].astype(np.int64).to_numpy()

    def col(name: str) -> pa.Array:
        return rows[name].combine_chunks() if isinstance(rows[name], pa.ChunkedArray) else rows[name]

    unique_id = pc.binary_join_element_wise(col("source"), col("record_key"), ":")
    prepared = _cleaned(unique_id, {name: col(name) for name in rows.column_names})
    info = _write_prepared(prepared, person, folder)
    return {"crm_rows": total_rows, "live_rows": live_rows, **info}


def prepare_people(raw: Path, folder: Path) -> dict:
    """prepared.parquet and truth.parquet from a `resolver generate --shape people` dataset: the same
    columns and the same cleaning as the CRM shape (street and company are null, source "people")."""
    people = pq.read_table(raw / "people.parquet").combine_chunks()
    truth = pq.read_table(raw / "truth" / "records.parquet").to_pandas()
    n = people.num_rows
    empty = pa.array([""] * n, pa.string())

    def col(name: str) -> pa.Array:
        return pc.fill_null(people[name].combine_chunks(), "")  # the raw strings the CRM cleaning expects

    unique_id = people["unique_id"].combine_chunks()
    person = pd.Series(truth["person_id"].to_numpy(), index=truth["record_key"].to_numpy())
    person = person.reindex(unique_id.to_numpy(zero_copy_only=False))
    if person.isna().any():
        raise RuntimeError("records without a truth person in the people shape")
    rows = {"source": pa.array(["people"] * n, pa.string()), "first_name": col("first_name"),
            "last_name": col("last_name"), "email": col("email"), "phone_main": col("phone"), "phone_mobile": empty,
            "birth_date": col("birth_date"), "street": empty, "city": col("city"), "postal_code": col("postcode"),
            "company": empty}
    prepared = _cleaned(unique_id, rows)
    info = _write_prepared(prepared, person.to_numpy(np.int64), folder)
    return {"people_rows": n, **info}


def _cleaned(unique_id: pa.Array, cols: dict[str, pa.Array]) -> pa.Table:
    """The prepared table (PREPARED_COLUMNS) from raw strings: both shapes and both tools read it."""
    from resolver.normalize import normalize_email, normalize_name, normalize_phone

    def col(name: str) -> pa.Array:
        return cols[name]

    def arrow(series: pd.Series) -> pa.Array:
        return _null_if_empty(pa.array(series.array).cast(pa.string()))

    phone_main, _ = normalize_phone(_series(col("phone_main")))
    phone_mobile, _ = normalize_phone(_series(col("phone_mobile")))
    birth = _null_if_empty(pc.utf8_trim_whitespace(col("birth_date")))
    birth = pc.if_else(pc.match_substring_regex(birth, r"^\d{4}-\d{2}-\d{2}$"), birth, pa.scalar(None, pa.string()))
    return pa.table({
        "unique_id": unique_id,
        "source": col("source"),
        "first_name": arrow(normalize_name(_series(col("first_name")))),
        "last_name": arrow(normalize_name(_series(col("last_name")))),
        "email": arrow(normalize_email(_series(col("email")))),
        "phone": arrow(phone_main.fillna(phone_mobile)),
        "birth_date": birth,
        "street": _clean_text(col("street"), lower=True),
        "city": _clean_text(col("city"), lower=True),
        "postal_code": _clean_text(col("postal_code"), lower=False),
        "company": _clean_text(col("company"), lower=False),
    })


def _write_prepared(prepared: pa.Table, person: np.ndarray, folder: Path) -> dict:
    """Write prepared.parquet and truth.parquet (unique_id -> person_id); return their counts."""
    unique_id = prepared["unique_id"]
    if pc.count_distinct(unique_id).as_py() != prepared.num_rows:
        raise RuntimeError("unique_id is not unique in the prepared table")
    pq.write_table(prepared, folder / "prepared.parquet", compression="zstd")
    pq.write_table(pa.table({"unique_id": unique_id, "person_id": pa.array(person, pa.int64())}),
                   folder / "truth.parquet", compression="zstd")
    sizes = np.bincount(np.unique(person, return_inverse=True)[1])
    source = prepared["source"].to_numpy()
    return {
        "records": prepared.num_rows,
        "by_source": {s: int(n) for s, n in zip(*np.unique(source, return_counts=True))},
        "true_clusters": int(len(sizes)), "true_pairs": int((sizes * (sizes - 1) // 2).sum()),
        "null_share": {c: round(prepared[c].null_count / max(prepared.num_rows, 1), 4) for c in PREPARED_COLUMNS},
    }


# ----------------------------------------------------------------------------------------------
# Running a tool: wall time, peak RSS of the process tree, timeout and memory cap
# ----------------------------------------------------------------------------------------------
def measure(cmd: list[str], cwd: Path, log_path: Path, timeout: float, max_rss: int, min_free_disk: int = 0) -> RunResult:
    """tool_runs.measure with this script's log lines."""
    return _measure(cmd, cwd, log_path, timeout, max_rss, min_free_disk, log=log)


# ----------------------------------------------------------------------------------------------
# Splink
# ----------------------------------------------------------------------------------------------
def splink_python() -> Path:
    """benchmarks/.venv-splink/bin/python with splink 5.0.0, created on first use."""
    return _splink_python(log)


def run_splink(data: Path, run_dir: Path, args) -> tuple[RunResult, dict | None]:
    python = splink_python()
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    cmd = [str(python), str(HERE / "splink_runner.py"), "--input", str(data / "prepared.parquet"),
           "--out", str(run_dir), "--threshold", str(THRESHOLD), "--memory-limit", args.splink_memory_limit,
           "--em-max-pairs", str(args.splink_em_max_pairs), *splink_drop_args(args.shape)]
    result = measure(cmd, run_dir, run_dir / "splink.log", args.timeout, args.max_rss, args.min_free_disk)
    shutil.rmtree(run_dir / "duckdb_tmp", ignore_errors=True)  # DuckDB's spill files, left behind by a killed run
    stats_path = run_dir / "stats.json"
    if stats_path.exists():
        stats = json.loads(stats_path.read_text())
        result.extra = {"stats": stats, "candidate_pairs": stats.get("candidate_pairs")}
        if stats.get("status") == "oom" and result.status != "timeout":
            result.status = "oom"
    if result.status != "ok":
        return result, None
    pairs = pd.read_parquet(run_dir / "pairs.parquet").rename(columns={"match_probability": "probability"})
    clusters = pd.read_parquet(run_dir / "clusters.parquet")
    return result, {"pairs": pairs, "clusters": clusters}


# ----------------------------------------------------------------------------------------------
# resolver
# ----------------------------------------------------------------------------------------------
def resolver_config(data: Path, shape: str = "crm") -> dict:
    attributes = {c: c for c in PREPARED_COLUMNS if c not in ("unique_id", "source")}
    return {
        "run": {"output_dir": "out", "workers": 2},
        "sources": [{
            "name": "crm" if shape == "crm" else "people", "kind": "records", "format": "parquet", "path": str((data / "prepared.parquet").resolve()),
            "key": "unique_id", "attributes": attributes, "identifiers": {"email": "email", "phone": "phone"},
        }],
        "identity": {"types": {
            "email": {"normalizer": "email", "priority": 3, "limit": 5, "hub_cap": 8, "strong": True},
            "phone": {"normalizer": "phone", "priority": 5, "limit": 5, "hub_cap": 8, "strong": True,
                      "link_limits": {"email": 1}},
        }},
        "matching": matching_for(shape),
    }


def run_resolver(data: Path, run_dir: Path, args) -> tuple[RunResult, dict | None]:
    import yaml

    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    config_path = run_dir / "resolver.yaml"
    config_path.write_text(yaml.safe_dump(resolver_config(data, args.shape), sort_keys=False))
    cmd = [str(RESOLVER_BIN), "run", "--config", str(config_path), "--quiet"]
    result = measure(cmd, run_dir, run_dir / "resolver.log", args.timeout, args.max_rss, args.min_free_disk)
    out = run_dir / "out"
    summary_path = out / "run_summary.json"
    if summary_path.exists():
        summary = json.loads(summary_path.read_text())
        matching = summary.get("matching") or {}
        result.extra = {"candidate_pairs": matching.get("candidate_pairs"), "matching": matching,
                        "seconds": summary.get("seconds"),
                        "stages": {st["stage"]: st.get("seconds") for st in summary.get("stages", [])}}
    if result.status != "ok":
        return result, None
    identity = pd.read_parquet(out / "identity_map.parquet")
    uid_of = pd.Series(identity["record_key"].to_numpy(), index=identity["record_id"].to_numpy())
    scored = pd.read_parquet(out / "scored_pairs.parquet",
                             columns=["record_id_l", "record_id_r", "probability", "decision"])
    # resolver's links are its accepted decisions: at or above 0.85 and not refused by a guard or a
    # must-agree comparison (those go to its review queue).
    scored = scored[scored["decision"] == "link"]
    pairs = pd.DataFrame({"unique_id_l": uid_of.reindex(scored["record_id_l"].to_numpy()).to_numpy(),
                          "unique_id_r": uid_of.reindex(scored["record_id_r"].to_numpy()).to_numpy(),
                          "probability": scored["probability"].to_numpy()})
    clusters = pd.DataFrame({"unique_id": identity["record_key"], "cluster_id": identity["person_id"]})
    outputs = {"pairs": pairs, "clusters": clusters}
    if "deterministic_group" in identity.columns:
        # Records joined by shared identifiers (email, phone) before any scoring: resolver scores only
        # pairs across these groups, so its links are the pairs inside a group plus the scored links.
        outputs["groups"] = pd.DataFrame({"unique_id": identity["record_key"],
                                          "group_id": identity["deterministic_group"]})
    return result, outputs


# ----------------------------------------------------------------------------------------------
# Metrics (identical for both tools)
# ----------------------------------------------------------------------------------------------
def _prf(tp: int, predicted: int, actual: int) -> dict:
    precision = tp / predicted if predicted else 0.0
    recall = tp / actual if actual else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "tp": int(tp), "predicted": int(predicted),
            "actual": int(actual)}


def _pairs_in(sizes: np.ndarray) -> int:
    sizes = sizes.astype(np.int64)
    return int((sizes * (sizes - 1) // 2).sum())


def _codes(values: pd.Series | np.ndarray) -> np.ndarray:
    """Dense integer codes (nulls get their own distinct codes: each is its own singleton)."""
    codes, _ = pd.factorize(pd.Series(values), use_na_sentinel=True)
    codes = codes.astype(np.int64)
    missing = codes < 0
    if missing.any():
        codes[missing] = codes.max(initial=-1) + 1 + np.arange(missing.sum())
    return codes


def _assignment(uid: pd.Index, ids: pd.Series, labels: pd.Series) -> tuple[np.ndarray, int]:
    """Dense labels for every record of uid (records without a label become singletons)."""
    n = len(uid)
    idx = uid.get_indexer(ids)
    assigned = np.full(n, -1, np.int64)
    keep = idx >= 0
    assigned[idx[keep]] = _codes(labels.to_numpy()[keep])
    missing = assigned < 0
    assigned[missing] = assigned.max(initial=-1) + 1 + np.arange(missing.sum())
    return _codes(assigned), int(missing.sum())


def _overlap(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(label a, label b, records) for every non-empty intersection of an a-group and a b-group."""
    table = pd.DataFrame({"a": a, "b": b}).value_counts(sort=False).reset_index(name="k")
    return table["a"].to_numpy(), table["b"].to_numpy(), table["k"].to_numpy()


def evaluate(truth: pd.DataFrame, pairs: pd.DataFrame, clusters: pd.DataFrame, groups: pd.DataFrame | None = None,
             threshold: float = THRESHOLD) -> dict:
    """Pairwise (links >= threshold), cluster-implied pairwise and exact-cluster metrics.

    ``groups`` (unique_id, group_id): records a tool joined before scoring (resolver's deterministic
    identifier groups). Their inside pairs count as links too, and scored links inside one group are
    counted once."""
    uid = pd.Index(truth["unique_id"])
    person = _codes(truth["person_id"].to_numpy())
    n = len(uid)
    true_sizes = np.bincount(person)
    true_pairs = _pairs_in(true_sizes)

    # Links before clustering: distinct unordered pairs of known, distinct records with p >= threshold.
    links = pairs[pairs["probability"] >= threshold]
    left = uid.get_indexer(links["unique_id_l"])
    right = uid.get_indexer(links["unique_id_r"])
    known = (left >= 0) & (right >= 0) & (left != right)
    lo, hi = np.minimum(left[known], right[known]), np.maximum(left[known], right[known])
    edge = np.unique(lo.astype(np.int64) * n + hi)
    lo, hi = edge // n, edge % n
    scored = _prf(int((person[lo] == person[hi]).sum()), len(edge), true_pairs)
    pairwise = dict(scored)
    if groups is not None:
        group, _ = _assignment(uid, groups["unique_id"], groups["group_id"])
        cross = group[lo] != group[hi]
        _, _, k_group = _overlap(group, person)
        pairwise = _prf(_pairs_in(k_group) + int((person[lo[cross]] == person[hi[cross]]).sum()),
                        _pairs_in(np.bincount(group)) + int(cross.sum()), true_pairs)
        pairwise["scored_links_only"] = scored
    pairwise["unknown_ids"] = int((~((left >= 0) & (right >= 0))).sum())

    # Clusters: every prepared record gets one; records absent from the output are singletons.
    cluster, missing = _assignment(uid, clusters["unique_id"], clusters["cluster_id"])
    pred_sizes = np.bincount(cluster)
    # Records per (predicted cluster, true person): the overlap table, counted without listing pairs
    # (a cluster of more than BIG_CLUSTER records is counted arithmetically like every other).
    overlap_c, overlap_p, k = _overlap(cluster, person)
    cluster_pairs = _prf(_pairs_in(k), _pairs_in(pred_sizes), true_pairs)
    exact = int(((k == pred_sizes[overlap_c]) & (k == true_sizes[overlap_p])).sum())
    cluster_exact = _prf(exact, len(pred_sizes), len(true_sizes))
    return {
        "records": n, "true_pairs": true_pairs, "true_clusters": int(len(true_sizes)),
        "pairwise": pairwise, "cluster_pairwise": cluster_pairs, "cluster": cluster_exact,
        "predicted_clusters": int(len(pred_sizes)), "largest_cluster": int(pred_sizes.max(initial=0)),
        "clusters_over_10k": int((pred_sizes > BIG_CLUSTER).sum()),
        "records_missing_from_clusters": missing,
    }


# ----------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------
def _fmt_prf(m: dict | None) -> str:
    return "-" if not m else f"{m['precision']:.4f} / {m['recall']:.4f} / {m['f1']:.4f}"


def _gib(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**30:.2f}"


def stage_seconds(row: dict) -> dict[str, float]:
    """A tool row's per-stage seconds: Splink's stats.json "seconds" (read, train_*, blocking, predict,
    cluster, write), resolver's run_summary.json stages (the per-source read:/normalize: stages are
    inside the ingest wall time and left out) and its total "seconds"."""
    extra = row.get("extra") or {}
    if row["tool"].startswith("splink"):
        return {k: v for k, v in ((extra.get("stats") or {}).get("seconds") or {}).items() if v is not None}
    stages = {k: v for k, v in (extra.get("stages") or {}).items()
              if v is not None and not k.startswith(("read:", "normalize:"))}
    if extra.get("seconds") is not None:
        stages["total"] = extra["seconds"]
    return stages


def _fmt_stages(stages: dict[str, float]) -> str:
    return "\n".join(f"{name} {seconds:.1f}" for name, seconds in stages.items()) or "-"


def print_table(rows: list[dict]) -> None:
    header = ["size", "tool", "status", "records", "wall s", "peak RSS GiB", "candidate pairs",
              "pairwise P / R / F1 (p>=0.85)", "cluster-pairs P / R / F1", "cluster P / R / F1", "largest",
              "stage seconds"]
    lines = []
    for row in rows:
        m = row.get("metrics") or {}
        cand = row.get("candidate_pairs")
        if row["tool"] == "ratio":
            lines.append([row["size"], "splink/resolver", "", "", row.get("wall", "-"), row.get("rss", "-"),
                          row.get("candidates", "-"), "", "", row.get("cluster_f1", ""), "", ""])
            continue
        lines.append([
            row["size"], row["tool"], row["status"], f"{row['records']:,}" if row.get("records") else "-",
            "-" if row.get("wall_s") is None else f"{row['wall_s']:.1f}", _gib(row.get("peak_rss_bytes")),
            "-" if cand is None else f"{cand:,}", _fmt_prf(m.get("pairwise")), _fmt_prf(m.get("cluster_pairwise")),
            _fmt_prf(m.get("cluster")), "-" if not m else f"{m['largest_cluster']:,}", _fmt_stages(stage_seconds(row)),
        ])
    try:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"Splink vs resolver (links and clusters at p >= {THRESHOLD})", header_style="bold")
        for i, name in enumerate(header):
            table.add_column(name, justify="left" if i < 3 or i == len(header) - 1 else "right")
        for line in lines:
            table.add_row(*[str(v) for v in line])
        Console(width=250).print(table)
    except ImportError:
        lines = [[str(v).replace("\n", ", ") for v in line] for line in lines]
        widths = [max(len(str(x)) for x in col) for col in zip(header, *lines)]
        for line in [header, *lines]:
            print("  ".join(str(v).rjust(w) for v, w in zip(line, widths)))


def print_configs(args) -> None:
    """Both tools' configurations, before anything runs: the resolver YAML (its path to
    prepared.parquet is per size) and the Splink settings (splink_runner.py --print-settings)."""
    import yaml

    print(f"=== configurations (shape {args.shape}) ===")
    if not args.skip_resolver:
        config = resolver_config(args.data / "<size folder>", args.shape)
        print("--- resolver: resolver.yaml ---")
        print(yaml.safe_dump(config, sort_keys=False, default_flow_style=None, width=110).rstrip())
    if not args.skip_splink:
        settings = subprocess.run([str(splink_python()), str(HERE / "splink_runner.py"), "--print-settings",
                                   *splink_drop_args(args.shape)],
                                  check=True, capture_output=True, text=True).stdout
        print(f"--- splink ({SPLINK_REQUIREMENTS[0]}): settings "
              f"(threshold {THRESHOLD}, DuckDB memory_limit {args.splink_memory_limit}, "
              f"EM max_pairs {args.splink_em_max_pairs or 'all'}) ---")
        print(settings.rstrip())
    print("=== end of configurations ===", flush=True)


def ratio_row(size: str, splink: dict, resolver: dict) -> dict | None:
    if splink.get("status") != "ok" or resolver.get("status") != "ok":
        return None

    def ratio(a, b):
        return f"{a / b:.2f}x" if a and b else "-"

    cs, cr = splink.get("candidate_pairs"), resolver.get("candidate_pairs")
    f1s = (splink.get("metrics") or {}).get("cluster", {}).get("f1")
    f1r = (resolver.get("metrics") or {}).get("cluster", {}).get("f1")
    return {"size": size, "tool": "ratio", "wall": ratio(splink["wall_s"], resolver["wall_s"]),
            "rss": ratio(splink["peak_rss_bytes"], resolver["peak_rss_bytes"]), "candidates": ratio(cs, cr),
            "cluster_f1": "-" if f1s is None or f1r is None else f"F1 diff {f1r - f1s:+.4f}",
            "wall_ratio": splink["wall_s"] / resolver["wall_s"],
            "rss_ratio": splink["peak_rss_bytes"] / resolver["peak_rss_bytes"]}


# ----------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------
def tool_row(size: str, tool: str, records: int, result: RunResult, metrics: dict | None) -> dict:
    row = {"size": size, "tool": tool, "records": records, **asdict(result), "metrics": metrics,
           "candidate_pairs": result.extra.get("candidate_pairs")}
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100k,1m,5m", help="comma list of " + ", ".join(SIZES))
    parser.add_argument("--seed", type=int, default=1, help="data seed")
    parser.add_argument("--shape", choices=["crm", "people"], default="crm",
                        help="crm: Salesforce contacts + leads (default); people: one person file "
                             "(`resolver generate --shape people`)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="runs of each tool per size, alternating (wall time and peak RSS: the median)")
    parser.add_argument("--skip-splink", action="store_true")
    parser.add_argument("--skip-resolver", action="store_true")
    parser.add_argument("--earlier", dest="earlier_results", nargs="*", default=[], type=Path,
                        help="results JSON files of earlier invocations: a skipped tool's rows come from them")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per tool run")
    parser.add_argument("--splink-memory-limit", default="12GB", help="DuckDB memory_limit for Splink")
    parser.add_argument("--splink-em-max-pairs", type=float, default=1e7,
                        help="Splink 5 EM max_pairs per training pass (0: all blocked pairs; default 1e7)")
    parser.add_argument("--max-rss-gb", type=float, default=round(0.9 * psutil.virtual_memory().total / 2**30, 1),
                        help="kill a tool whose process-tree RSS passes this (default: 90%% of RAM)")
    parser.add_argument("--min-free-disk-gb", type=float, default=8,
                        help="kill a tool when the data disk has less free space (DuckDB spills there)")
    parser.add_argument("--data", type=Path, default=HERE / "data" / "compare_splink")
    parser.add_argument("--results", type=Path, default=HERE / "results")
    args = parser.parse_args(argv)
    sizes = [s.strip().lower() for s in args.sizes.split(",") if s.strip()]
    unknown = [s for s in sizes if s not in SIZES]
    if unknown:
        parser.error(f"unknown sizes {unknown}; choose from {list(SIZES)}")
    args.earlier = {}
    for path in args.earlier_results:  # later files win
        for size, entry in json.loads(Path(path).read_text())["sizes"].items():
            for tool, row in entry.get("tools", {}).items():
                args.earlier.setdefault(size, {})[tool] = row
    args.max_rss = int(args.max_rss_gb * 2**30)
    args.min_free_disk = int(args.min_free_disk_gb * 2**30)

    stamp = dt.datetime.now().strftime("%Y-%m-%d-%H%M%S")
    args.results.mkdir(parents=True, exist_ok=True)
    results_path = args.results / (f"compare_splink-{stamp}.json" if args.shape == "crm"
                                   else f"compare_splink-{args.shape}-{stamp}.json")
    report = {"started": stamp, "host": {"python": platform.python_version(), "cpus": os.cpu_count(),
                                         "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
                                         "platform": platform.platform()},
              "settings": {"shape": args.shape, "seed": args.seed, "threshold": THRESHOLD, "timeout_s": args.timeout,
                           "splink_memory_limit": args.splink_memory_limit,
                           "splink_em_max_pairs": args.splink_em_max_pairs or None, "max_rss_gb": args.max_rss_gb},
              "sizes": {}}
    rows: list[dict] = []
    print_configs(args)
    for size in sizes:
        data = ensure_data(size, args.seed, args.data, args.shape)
        info = json.loads((data / "prepared.json").read_text())
        truth = pd.read_parquet(data / "truth.parquet")
        entry = {"data": info, "tools": {}}
        report["sizes"][size] = entry
        tools = (("splink", args.skip_splink, run_splink), ("resolver", args.skip_resolver, run_resolver))
        for tool, skip, _ in tools:
            earlier = args.earlier.get(size, {}).get(tool)
            if skip and earlier:  # a row measured by an earlier invocation (--earlier), shown as such
                earlier = {**earlier, "tool": f"{tool} (earlier run)"}
                rows.append(earlier)
                entry["tools"][tool] = earlier
        measured: dict[str, dict] = {}
        for repeat in range(args.repeat):  # the tools alternate, so that both see the machine alike
            for tool, skip, runner in tools:
                if skip:
                    continue
                log(f"{size}: {tool}" + (f" (run {repeat + 1} of {args.repeat})" if args.repeat > 1 else ""))
                result, outputs = runner(data, data / "runs" / tool, args)
                metrics = None
                if outputs is not None and tool not in measured:  # both tools are deterministic: scored once
                    start = time.perf_counter()
                    metrics = evaluate(truth, outputs["pairs"], outputs["clusters"], outputs.get("groups"))
                    log(f"{size}: {tool} scored in {time.perf_counter() - start:.1f} s: cluster F1 "
                        f"{metrics['cluster']['f1']:.4f}, pairwise F1 {metrics['pairwise']['f1']:.4f}")
                del outputs
                if tool not in measured:
                    measured[tool] = tool_row(size, tool, info["records"], result, metrics)
                    measured[tool]["runs"] = []
                measured[tool]["runs"].append({"status": result.status, "wall_s": result.wall_s,
                                               "peak_rss_bytes": result.peak_rss_bytes})
        for tool, row in measured.items():
            ok = [r for r in row["runs"] if r["status"] == "ok"]
            if ok:  # the median of the runs (of 3: the middle one)
                row["wall_s"] = float(np.median([r["wall_s"] for r in ok]))
                row["peak_rss_bytes"] = int(np.median([r["peak_rss_bytes"] for r in ok]))
            rows.append(row)
            entry["tools"][tool] = row
            results_path.write_text(json.dumps(report, indent=2, default=str) + "\n")
        if "splink" in entry["tools"] and "resolver" in entry["tools"]:
            ratio = ratio_row(size, entry["tools"]["splink"], entry["tools"]["resolver"])
            if ratio:
                rows.append(ratio)
                entry["ratio"] = ratio
        results_path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print_table(rows)
    log(f"results: {results_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
