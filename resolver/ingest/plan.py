"""Ingest planning: the jobs (files, or pieces of big files), run in worker processes or on the
cluster, or loaded from the state's snapshots when nothing they depend on changed; and the parts'
tables gathered for the stages after ingest.

ingest_all returns one SourceTables per job, in plan order, equal to a sequential read of every
file (event ids repeated across files are found afterwards, _redo_cross_file_duplicates).
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from resolver.compute.heap import return_freed_memory
from resolver.compute.engine import LOCAL, Engine
from resolver.compute.grouping import sorted_unique
from resolver.config import Config
from resolver.ingest.memo import NormalizationMemo
from resolver.ingest.readers import REJECT_COLUMNS, Piece, read_source, split_file, unreadable
from resolver.ingest.tables import ACTION_COLUMNS, SourceTables, Vocabulary, ingest_source
from resolver.ingest.attributes import attribute_kinds, match_attributes
from resolver.normalize import Blocklist
from resolver.resolution import StageLog
from resolver.ingest.snapshots import fingerprint_files, fingerprint_table, load_snapshot, snapshot_key


@dataclass(frozen=True)
class IngestJob:
    """Some files of one source, or one piece of one file, read and normalized together (in a
    worker process)."""

    source_index: int
    files: tuple[str, ...]
    piece: Piece | None = None


def plan_ingest(config: Config) -> list[IngestJob]:
    """One job per file, or per piece of a big splittable file (record keys and event ids repeated
    across the jobs of a source are found afterwards); a source that matches no file gets one job,
    whose read names the problem."""
    jobs = []
    for index, source in enumerate(config.sources):
        files = [str(f) for f in config.source_files(source)]
        if not files:
            jobs.append(IngestJob(index, ()))
        for f in files:
            try:
                pieces = split_file(Path(f), source.format, config.run.partition_bytes, source.csv) or [None]
            except OSError as exc:
                raise unreadable(source, f, exc) from exc
            jobs.extend(IngestJob(index, (f,), piece) for piece in pieces)
    return jobs


def ingest_job(config: Config, job: IngestJob, vocab: Vocabulary, seen_event_ids: np.ndarray | None = None,
               memo: NormalizationMemo | None = None) -> SourceTables:
    """Read and normalize one job's files; with a memo, values it remembers are not normalized
    again, and the job's lookups come back in tables.memo."""
    own = NormalizationMemo(tables=memo.tables, folder=memo.folder) if memo is not None else None
    tables = _ingest_job(config, job, vocab, seen_event_ids, own)
    if own is None:
        return tables
    tables.memo = NormalizationMemo(seen=own.seen, hits=own.hits, misses=own.misses)  # not the tables it read
    return tables


def _ingest_job(config: Config, job: IngestJob, vocab: Vocabulary, seen_event_ids: np.ndarray | None,
                memo: NormalizationMemo | None) -> SourceTables:
    return_freed_memory()  # in a worker process too
    source = config.sources[job.source_index]
    blocklist = Blocklist.from_config(
        config.identity.blocklist.values, config.identity.blocklist.patterns, config.identity.blocklist.vendor_lists
    )
    start = time.perf_counter()
    # An empty file list lets read_source raise its "no files match" error.
    raw = read_source(config, source, files=[Path(f) for f in job.files] or None, piece=job.piece)
    read_s = time.perf_counter() - start
    tables = ingest_source(config, source, raw, blocklist, vocab, seen_event_ids, memo)
    if tables.records is not None:  # in match form for matching and golden records, once per record
        tables.attributes = pd.DataFrame(match_attributes(tables.records, config, attribute_kinds(config), memo,
                                                          tables.in_match_form))
    tables.in_match_form = None  # in the attributes now, or not wanted
    tables.seconds = {"read": read_s, "normalize": time.perf_counter() - start - read_s}
    return tables


def _estimated_cost(config: Config, job: IngestJob) -> float:
    """Bytes to read, weighted: a records row costs about 2.5 times an event per byte (measured:
    Salesforce CSV ~0.05 s/MB, Segment JSONL ~0.02 s/MB to read and normalize)."""
    weight = 2.5 if config.sources[job.source_index].kind == "records" else 1.0
    if job.piece is not None and config.sources[job.source_index].format != "parquet":
        return weight * (job.piece.end - job.piece.start)
    return weight * sum(_size(f) for f in job.files)


def _size(path: str) -> int:
    """A file's size, 0 when it is gone: only a scheduling guess; the job's read names the problem."""
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def run_jobs(config: Config, jobs: list[IngestJob], vocab: Vocabulary, engine: Engine,
             memo: NormalizationMemo | None = None) -> list[SourceTables]:
    """Every job's tables, in plan order, each job a worker's (Engine.map_heavy)."""
    # Workers read the memo tables they use from the state themselves (no pickled copies).
    shipped = NormalizationMemo(folder=memo.folder) if memo is not None else None
    return engine.map_heavy(ingest_job, [(config, job, vocab, None, shipped) for job in jobs],
                            [_estimated_cost(config, job) for job in jobs])


def _redo_cross_file_duplicates(config: Config, jobs: list[IngestJob], parts: list[SourceTables], vocab: Vocabulary,
                                memo: NormalizationMemo | None = None) -> None:
    """An event id seen in an earlier file of the same source makes the later copy a duplicate.

    Files are ingested independently; the rare file that repeats an earlier file's event ids is
    ingested again, in order, with those ids excluded, so the result equals a sequential read.
    """
    for source_index in sorted({job.source_index for job in jobs}):
        mine = [i for i, job in enumerate(jobs) if job.source_index == source_index and parts[i].event_ids is not None]
        if len(mine) < 2:
            continue
        ids = np.concatenate([parts[i].event_ids for i in mine])
        owner = np.concatenate([np.full(len(parts[i].event_ids), k) for k, i in enumerate(mine)])
        order = np.argsort(ids, kind="stable")  # stable: within equal ids, earlier files first
        repeated = ids[order][1:] == ids[order][:-1]
        if not repeated.any():
            continue
        first_repeat = int(owner[order][1:][repeated].min())
        for k in range(first_repeat, len(mine)):
            earlier = sorted_unique(np.concatenate([parts[i].event_ids for i in mine[:k]]))
            if np.isin(parts[mine[k]].event_ids, earlier).any():
                parts[mine[k]] = ingest_job(config, jobs[mine[k]], vocab, seen_event_ids=earlier, memo=memo)


@dataclass
class Snapshots:
    """Source snapshots for a run with a state: the previous version's (key -> folder, usable when
    `reuse`), the files' fingerprints, and the memo keys of each part of this run (by snapshot key)."""

    previous: dict[str, Path]
    known_files: pd.DataFrame | None
    config_digest: str
    reuse: bool
    files: pd.DataFrame | None = None
    memo_keys: dict[str, pd.DataFrame] = field(default_factory=dict)  # of the parts loaded from the state
    lookups: dict[str, dict] = field(default_factory=dict)  # memo lookups of the parts ingested (NormalizationMemo.seen)

    def keys(self, config: Config, jobs: list[IngestJob], vocab: Vocabulary) -> list[str]:
        keys, prints = [], {}
        for job in jobs:
            missing = [f for f in job.files if f not in prints]  # a file read in pieces is hashed once
            try:
                prints.update({p.path: p for p in fingerprint_files(missing, self.known_files)})
            except OSError as exc:
                raise unreadable(config.sources[job.source_index], exc.filename or ", ".join(missing), exc) from exc
            mine = [prints[f] for f in job.files]
            settings = config.sources[job.source_index].model_dump_json()
            if job.piece is not None:
                settings += f"|piece {job.piece.start}:{job.piece.end}:{job.piece.first_row}"
            keys.append(snapshot_key(self.config_digest, settings, (vocab.types, vocab.rules), mine))
        self.files = fingerprint_table(list(prints.values()))
        return keys


def _load_snapshots(folders: list[Path]) -> list[tuple[SourceTables, pd.DataFrame]]:
    with ThreadPoolExecutor(max_workers=4) as pool:  # Parquet decoding releases the GIL
        return list(pool.map(load_snapshot, folders))


def ingest_all(config: Config, log: StageLog, vocab: Vocabulary, memo: NormalizationMemo | None = None,
               snapshots: Snapshots | None = None, engine: Engine = LOCAL) -> list[SourceTables]:
    """Every job's tables, in plan order. With snapshots, a job whose files and configuration are
    unchanged since the previous run is loaded from the state instead of read and normalized."""
    jobs = plan_ingest(config)
    with log.stage("ingest (read + normalize, wall)") as entry:
        keys = snapshots.keys(config, jobs, vocab) if snapshots is not None else [None] * len(jobs)
        kept = [i for i, k in enumerate(keys) if snapshots is not None and snapshots.reuse and k in snapshots.previous]
        todo = [i for i in range(len(jobs)) if i not in set(kept)]
        parts: list[SourceTables] = [None] * len(jobs)  # type: ignore[list-item]
        for i, part in zip(todo, run_jobs(config, [jobs[i] for i in todo], vocab, engine, memo)):
            parts[i] = part
        for i, (part, looked_up) in zip(kept, _load_snapshots([snapshots.previous[keys[i]] for i in kept])):
            part.loaded = True
            parts[i] = part
            snapshots.memo_keys[keys[i]] = looked_up
        before = list(parts)
        _redo_cross_file_duplicates(config, jobs, parts, vocab, memo)
        for i, part in enumerate(parts):
            # A part ingested again because an earlier file repeated its event ids depends on
            # that file too: it is never snapshotted.
            part.snapshot = keys[i] if part is before[i] else None
        entry["rows_out"] = sum(p.rows_read for p in parts)
        entry["loaded_from_state"] = len(kept)
    for part in parts:
        if part.memo is not None and snapshots is not None and part.snapshot is not None:
            snapshots.lookups[part.snapshot] = part.memo.seen
    for source in config.sources:
        mine = [p for p in parts if p.name == source.name]
        own_jobs = [j for j in jobs if config.sources[j.source_index].name == source.name]
        for step in ("read", "normalize"):
            log.stages.append(
                {
                    "stage": f"{step}:{source.name}",
                    "rows_in": sum(p.rows_read for p in mine) if step == "normalize" else None,
                    "rows_out": sum(p.rows_read for p in mine) if step == "read"
                    else sum(p.resolved for p in mine),
                    "seconds": round(sum(p.seconds[step] for p in mine), 4),
                    "files": len({f for j in own_jobs for f in j.files}),
                    "jobs": len(own_jobs),
                    "note": "summed over worker processes",
                }
            )
    return parts


def absorb_lookups(memo: NormalizationMemo | None, parts: list[SourceTables], snapshots: Snapshots | None) -> None:
    """The parts' memo lookups join the run's memo (after suppression: a part from which erased
    data was dropped hands on none of its lookups, so no value of an erased record is remembered;
    it is read and normalized again each run, as it is never snapshotted)."""
    if memo is None:
        return
    for part in parts:
        if part.memo is not None:
            memo.absorb({} if part.erased else part.memo.seen, part.memo.hits, part.memo.misses)
            part.memo = None
        elif part.loaded and not part.erased:  # what its normalization looked up stays in the memo handed on
            looked_up = snapshots.memo_keys[part.snapshot]
            for name, group in looked_up.groupby("name", sort=True).indices.items():
                memo.remember(name, looked_up["key"].to_numpy(np.uint64)[group])


# --------------------------------------------------------------------------------------------
# The parts' tables, gathered for the stages after ingest (records in build_graph's order)
# --------------------------------------------------------------------------------------------
def stacked(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """pd.concat of the frames, each Arrow-backed text column in one chunk: pandas keeps the parts'
    chunks, and every Arrow kernel (and Arrow-buffer numba loop) over such a column after it would
    pay for them, or combine them again (1.43M records read in two pieces: a run 5-6 s slower)."""
    table = pd.concat(frames, ignore_index=True)
    if len(frames) > 1:
        for column in table.columns:
            values = table[column].array
            if isinstance(values, pd.arrays.ArrowStringArray):
                chunks = values.__arrow_array__()
                if chunks.num_chunks > 1:
                    table[column] = pd.array(chunks.combine_chunks(), dtype=values.dtype)
    return table


def concat_frames(frames: list[pd.DataFrame], columns: list[str]) -> pd.DataFrame:
    """The non-empty frames stacked, in `columns` (an empty table of those columns when none)."""
    frames = [f for f in frames if f is not None and len(f)]
    if not frames:
        return pd.DataFrame(columns=columns)
    return stacked(frames)[columns]


def attributes_of(parts: list[SourceTables]) -> dict[str, pd.Series] | None:
    """The records' match attributes, in record order (None when no part has records)."""
    frames = [p.attributes for p in parts if p.records is not None and p.attributes is not None]
    if not frames:
        return None
    table = stacked(frames)
    return {column: table[column] for column in table.columns}


def sessions_of(parts: list[SourceTables]) -> pd.DataFrame | None:
    """The event sources' sessions (anonymous visitors), stacked (None when there are none)."""
    session_parts = [p.sessions for p in parts if p.sessions is not None and len(p.sessions)]
    return pd.concat(session_parts, ignore_index=True) if session_parts else None


def ingest_actions(parts: list[SourceTables]) -> pd.DataFrame:
    """The ingest jobs' policy actions, one row per action, source, type, value and reason with the
    rows counted over all the source's files."""
    actions = concat_frames([a for p in parts for a in p.actions], ACTION_COLUMNS)
    if not len(actions):
        return actions
    keys = [c for c in ACTION_COLUMNS if c != "count"]
    return actions.groupby(keys, sort=True, dropna=False, observed=True)["count"].sum().reset_index()[ACTION_COLUMNS]


def rejects_of(parts: list[SourceTables]) -> pd.DataFrame:
    """Every part's rejected rows, in plan order."""
    return concat_frames([r for p in parts for r in p.rejects], REJECT_COLUMNS)
