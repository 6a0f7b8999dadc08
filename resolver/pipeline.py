"""The deterministic pipeline, top to bottom: read -> normalize/ingest -> graph -> cluster -> outputs.

Each stage is a plain function over tables; `run` wires them together, times each stage and
accounts for every input row.
"""

from __future__ import annotations

import os
import time
import uuid
from contextlib import contextmanager, nullcontext
from pathlib import Path
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable

import numpy as np
import pandas as pd

from resolver import __version__
from resolver.compute.backend import CPU, Backend, select_backend
from resolver.compute.frames import Aggregate, group_aggregate
from resolver.compute.cluster import connected_components
from resolver.ids import format_person_ids, record_member_keys, smallest_member_keys
from resolver.config import Config, ConfigError
from resolver.state.crashpoints import crash_point
from resolver.state.erasure import suppress
from resolver.persons.golden import build_golden, raw_fields
from resolver.matching.match import Reuse
from resolver.ingest.memo import NormalizationMemo
from resolver.state.store import State, StateStore, carry_ids
from resolver.compute.heap import return_freed_memory
from resolver.graph.guards import ACTION_COLUMNS, CUT, OBSERVED, PROBABILISTIC, resolve_graph
from resolver.compute.grouping import Groups
from resolver.ingest.tables import IDENTIFIER_RULE, SourceTables, Vocabulary, ingest_source, reject_cross_file_duplicates
from resolver.ingest.readers import REJECT_COLUMNS, Piece, read_source, split_file, unreadable
from resolver.outputs.writers import stage_outputs, write_outputs
from resolver.normalize import Blocklist
from resolver.outputs.report import REPORT_FILE, report_for_run
from resolver.state.review import load_decisions
from resolver.compute.workers import worker_pool
from resolver.state.snapshots import SnapshotWriter

Reporter = Callable[[str], None]


@dataclass
class StageLog:
    stages: list[dict] = field(default_factory=list)
    report: Reporter | None = None

    @contextmanager
    def stage(self, name: str, rows_in: int | None = None):
        entry = {"stage": name, "rows_in": rows_in, "rows_out": None}
        if self.report:
            self.report(name)
        start = time.perf_counter()
        yield entry
        entry["seconds"] = round(time.perf_counter() - start, 4)
        entry["peak_rss_mb"] = round(_peak_rss_mb(), 1)
        self.stages.append(entry)


def _peak_rss_mb(who: str = "self") -> float:
    """Peak resident memory of this process, or of the largest finished worker process."""
    import resource

    scope = resource.RUSAGE_SELF if who == "self" else resource.RUSAGE_CHILDREN
    return resource.getrusage(scope).ru_maxrss / 1024


# The records' columns read once golden records are built (their attributes are read until then).
RECORD_COLUMNS = ["record_id", "source", "record_key", "source_key", "trust", "timestamp", "is_deleted", "file", "row"]


@dataclass
class Resolution:
    records: pd.DataFrame  # RECORD_COLUMNS
    identity_map: pd.DataFrame
    identifier_map: pd.DataFrame
    persons: pd.DataFrame
    policy_actions: pd.DataFrame
    rejects: pd.DataFrame
    summary: dict
    match_links: pd.DataFrame | None = None
    review_queue: pd.DataFrame | None = None
    scored_pairs: pd.DataFrame | None = None
    blocking_keys: pd.DataFrame | None = None
    model: object | None = None  # the FSModel, saved as model.json
    golden_records: pd.DataFrame | None = None
    conflicts: pd.DataFrame | None = None
    matching: dict | None = None  # run-summary section
    golden: dict | None = None  # run-summary section
    carried: object | None = None  # CarriedIds when the run started from a state
    lineage: pd.DataFrame | None = None  # every merge and split so far (with a state)
    match: object | None = None  # the MatchResult (its pair cache goes to the state)
    anonymous_map: pd.DataFrame | None = None  # anonymous visitor stitching: anonymous id -> person
    stitch_review: pd.DataFrame | None = None
    stitching: dict | None = None  # run-summary section
    attributes: dict | None = None  # run-summary section: per attribute, its kind and values it nulled
    warnings: list[str] = field(default_factory=list)  # run-summary `warnings` (config and attributes)


def _concat(frames: list[pd.DataFrame], columns: list[str]) -> pd.DataFrame:
    frames = [f for f in frames if f is not None and len(f)]
    if not frames:
        return pd.DataFrame(columns=columns)
    return pd.concat(frames, ignore_index=True)[columns]


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
    if own is None:
        return _ingest_job(config, job, vocab, seen_event_ids)
    with own.active():
        tables = _ingest_job(config, job, vocab, seen_event_ids)
    tables.memo = NormalizationMemo(seen=own.seen, hits=own.hits, misses=own.misses)  # not the tables it read
    return tables


def _ingest_job(config: Config, job: IngestJob, vocab: Vocabulary, seen_event_ids: np.ndarray | None) -> SourceTables:
    return_freed_memory()  # in a worker process too
    source = config.sources[job.source_index]
    blocklist = Blocklist.from_config(
        config.identity.blocklist.values, config.identity.blocklist.patterns, config.identity.blocklist.vendor_lists
    )
    start = time.perf_counter()
    # An empty file list lets read_source raise its "no files match" error.
    raw = read_source(config, source, files=[Path(f) for f in job.files] or None, piece=job.piece)
    read_s = time.perf_counter() - start
    tables = ingest_source(config, source, raw, blocklist, vocab, seen_event_ids)
    if tables.records is not None:  # in match form for matching and golden records, once per record
        from resolver.matching.attributes import attribute_kinds, match_attributes

        tables.attributes = pd.DataFrame(match_attributes(tables.records, config, attribute_kinds(config)))
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


def _run_jobs(config: Config, jobs: list[IngestJob], vocab: Vocabulary,
              memo: NormalizationMemo | None = None) -> list[SourceTables]:
    from resolver.compute import dask_engine

    engine = dask_engine.active()
    if engine is not None and jobs:  # one task per file on the cluster
        shipped = NormalizationMemo(folder=memo.folder) if memo is not None else None
        n = len(jobs)
        return engine.map(ingest_job, [config] * n, jobs, [vocab] * n, [None] * n, [shipped] * n)
    workers = min(config.run.workers, len(jobs))
    if workers <= 1:
        return [ingest_job(config, job, vocab, memo=memo) for job in jobs]
    # Costliest jobs first keeps both workers busy to the end; results come back in plan order.
    order = sorted(range(len(jobs)), key=lambda i: -_estimated_cost(config, jobs[i]))
    with worker_pool(workers) as pool:
        # Workers read the memo tables they use from the state themselves (no pickled copies).
        shipped = NormalizationMemo(folder=memo.folder) if memo is not None else None
        futures = {i: pool.submit(ingest_job, config, jobs[i], vocab, None, shipped) for i in order}
        results = [futures[i].result() for i in range(len(jobs))]
        crash_point("workers-idle")  # test-only (resolver/state/crashpoints.py): a kill with the workers up
        return results


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
            earlier = np.unique(np.concatenate([parts[i].event_ids for i in mine[:k]]))
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
        from resolver.state.snapshots import fingerprint_files, fingerprint_table, snapshot_key

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
    from concurrent.futures import ThreadPoolExecutor

    from resolver.state.snapshots import load_snapshot

    with ThreadPoolExecutor(max_workers=4) as pool:  # Parquet decoding releases the GIL
        return list(pool.map(load_snapshot, folders))


def ingest_all(config: Config, log: StageLog, vocab: Vocabulary, memo: NormalizationMemo | None = None,
               snapshots: Snapshots | None = None) -> list[SourceTables]:
    """Every job's tables, in plan order. With snapshots, a job whose files and configuration are
    unchanged since the previous run is loaded from the state instead of read and normalized."""
    jobs = plan_ingest(config)
    with log.stage("ingest (read + normalize, wall)") as entry:
        keys = snapshots.keys(config, jobs, vocab) if snapshots is not None else [None] * len(jobs)
        kept = [i for i, k in enumerate(keys) if snapshots is not None and snapshots.reuse and k in snapshots.previous]
        todo = [i for i in range(len(jobs)) if i not in set(kept)]
        parts: list[SourceTables] = [None] * len(jobs)  # type: ignore[list-item]
        for i, part in zip(todo, _run_jobs(config, [jobs[i] for i in todo], vocab, memo)):
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


def _alias_groups(n_nodes: int, observations: pd.DataFrame, obs_node: np.ndarray) -> np.ndarray:
    """Values an explicit same-type link declares equal (merged Salesforce ids) share an alias group."""
    frame = observations[["record_id", "type", "is_key", "explicit"]].assign(node=obs_node)
    keys = frame[frame["is_key"]][["record_id", "type", "node"]]
    links = frame[frame["explicit"]][["record_id", "type", "node"]]
    pairs = keys.merge(links, on=["record_id", "type"], suffixes=("_a", "_b"))
    return connected_components(n_nodes, pairs["node_a"].to_numpy(), pairs["node_b"].to_numpy())


def _earliest(n: int, index: np.ndarray, times: np.ndarray) -> np.ndarray:
    ints = times.astype("datetime64[ns]").view(np.int64)
    big = np.iinfo(np.int64).max
    out = np.full(n, big, dtype=np.int64)
    np.minimum.at(out, index, np.where(ints == np.iinfo(np.int64).min, big, ints))
    return np.where(out == big, np.iinfo(np.int64).min, out).view("datetime64[ns]")


def _latest(n: int, index: np.ndarray, times: np.ndarray) -> np.ndarray:
    out = np.full(n, np.iinfo(np.int64).min, dtype=np.int64)
    np.maximum.at(out, index, times.astype("datetime64[ns]").view(np.int64))
    return out.view("datetime64[ns]")


def build_graph(parts: list[SourceTables]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Records, identifier nodes and edges (node numbers: records first, then identifiers).

    Identifier nodes are numbered in hash order, so numbering never depends on input order.
    The parts' observations and event tables are consumed (released as they are copied).
    """
    record_parts = [p for p in parts if p.records is not None]
    if not record_parts:
        raise ConfigError("sources: no `kind: records` source; persons are made of records (CRM rows, or identify "
                          "calls read as records) and events attach to them: add a records source")
    event_parts = [p for p in parts if p.event_nodes is not None and len(p.event_nodes)]
    offsets = np.cumsum([0] + [len(p.records) for p in record_parts])
    records = pd.concat([p.records for p in record_parts], ignore_index=True)
    records.insert(0, "record_id", np.arange(len(records), dtype=np.int64))
    n_records = len(records)
    observations = pd.concat(
        [p.observations.assign(record_id=p.observations["record_pos"].to_numpy() + off) for p, off in zip(record_parts, offsets)],
        ignore_index=True,
    )
    event_nodes = [p.event_nodes for p in event_parts]
    node_counts = [len(t) for t in event_nodes]
    for part in record_parts + event_parts:  # the concatenated copies replace them (memory)
        part.observations = part.event_nodes = None

    # Every identifier value is observed on a record or is a node of some event file.
    hashes = np.concatenate([observations["hash"].to_numpy(np.uint64)] + [t["hash"].to_numpy(np.uint64) for t in event_nodes])
    node_hash, first_row, node_of_row = np.unique(hashes, return_index=True, return_inverse=True)
    n_nodes = len(node_hash)
    n_obs = len(observations)
    obs_node = node_of_row[:n_obs]
    ev_node = node_of_row[n_obs:]
    ev_frame = pd.concat(event_nodes, ignore_index=True) if event_nodes else None
    del event_nodes

    record_ids = observations["record_id"].to_numpy()
    record_time = records["timestamp"].to_numpy()[record_ids]
    distinct_record = ~pd.Series(obs_node * np.int64(n_records + 1) + record_ids).duplicated().to_numpy()
    node_type = np.zeros(n_nodes, dtype=np.int16)
    node_type[obs_node] = observations["type"].to_numpy()
    values = observations["value"]
    events = np.zeros(n_nodes, np.int64)
    anchored = np.zeros(n_nodes, np.int64)
    times = [record_time]
    index = [obs_node]
    if ev_frame is not None:
        node_type[ev_node] = ev_frame["type"].to_numpy()
        values = pd.concat([values, ev_frame["value"]], ignore_index=True)
        events = np.bincount(ev_node, weights=ev_frame["events"].to_numpy(), minlength=n_nodes).astype(np.int64)
        anchored = np.bincount(ev_node, weights=ev_frame["anchored"].to_numpy(), minlength=n_nodes).astype(np.int64)
        times += [ev_frame["first_seen"].to_numpy(), ev_frame["last_seen"].to_numpy()]
        index += [ev_node, ev_node]
    all_index, all_times = np.concatenate(index), np.concatenate(times)
    nodes = pd.DataFrame(
        {
            "hash": node_hash,
            "type": node_type,
            "value": values.take(first_row).reset_index(drop=True),
            "records": np.bincount(obs_node[distinct_record], minlength=n_nodes).astype(np.int64),
            "events": events,
            "anchored_events": anchored,
            "first_seen": _earliest(n_nodes, all_index, all_times),
            "last_seen": _latest(n_nodes, all_index, all_times),
        },
        copy=False,  # fresh arrays: not copied into consolidated blocks (memory)
    )
    nodes["alias"] = _alias_groups(n_nodes, observations, obs_node)

    src = [record_ids]
    dst = [n_records + obs_node]
    columns = {c: [observations[c].to_numpy()] for c in ("type", "rule", "explicit")}
    del observations, ev_frame, values  # node tables are built; free their copies before the edges
    count = [np.ones(n_obs, dtype=np.int64)]
    first_seen = [record_time]
    start = n_obs
    for part, part_nodes in zip(event_parts, node_counts):
        global_node = n_records + node_of_row[start:start + part_nodes]
        start += part_nodes
        e, part.event_edges = part.event_edges, None
        src.append(global_node[e["a"].to_numpy()])
        dst.append(global_node[e["b"].to_numpy()])
        for c in columns:
            columns[c].append(e[c].to_numpy())
        count.append(e["count"].to_numpy(np.int64))
        first_seen.append(e["first_seen"].to_numpy())
    src, dst = np.concatenate(src), np.concatenate(dst)
    lo, hi = np.minimum(src, dst), np.maximum(src, dst)
    del src, dst
    explicit = np.concatenate(columns["explicit"]).astype(bool)
    # One edge per node pair, seen how often in all; an explicit link names the rule.
    groups = Groups.of(lo * np.int64(n_records + n_nodes) + hi, tiebreak=~explicit)
    edges = pd.DataFrame(
        {
            "src": groups.first(lo),
            "dst": groups.first(hi),
            "type": groups.first(np.concatenate(columns["type"])),
            "rule": groups.first(np.concatenate(columns["rule"])),
            "explicit": groups.first(explicit),
            "count": groups.sum(np.concatenate(count)),
            "first_seen": groups.min_time(np.concatenate(first_seen)),
        },
        copy=False,  # fresh arrays: not copied into consolidated blocks (memory)
    )
    return records, nodes, edges


def _label_age(labels: np.ndarray, records: pd.DataFrame, nodes: pd.DataFrame) -> np.ndarray:
    """Per label, the earliest time any member was seen (record timestamp, identifier first_seen);
    unknown times count as newest."""
    never = np.iinfo(np.int64).max
    times = np.concatenate([records["timestamp"].to_numpy("datetime64[ns]").view(np.int64),
                            nodes["first_seen"].to_numpy("datetime64[ns]").view(np.int64)])
    times = np.where(times == np.iinfo(np.int64).min, never, times)
    out = np.full(int(labels.max()) + 1 if len(labels) else 0, never, dtype=np.int64)
    np.minimum.at(out, labels, times)
    return out


def _member_keys(records: pd.DataFrame, nodes: pd.DataFrame) -> np.ndarray:
    return np.concatenate([record_member_keys(records), nodes["hash"].to_numpy(np.uint64)])


def _linked_by(records: pd.DataFrame, edges: pd.DataFrame, status: np.ndarray, config: Config, vocab: Vocabulary) -> np.ndarray:
    """Per record, the strongest accepted edge that ties it to the rest of its person
    ("singleton" when nothing does).

    Explicit links (merges, conversions) come first, then identifier types by priority.
    """
    n = len(records)
    src, dst = edges["src"].to_numpy(), edges["dst"].to_numpy()
    accepted = np.asarray(status == "linked")
    # Only an identifier that ties the record to something else explains a link; a probabilistic
    # link (record to record) explains both of its records.
    degree = np.bincount(np.concatenate([src[accepted], dst[accepted]]), minlength=int(dst.max(initial=0)) + 1)
    linked = accepted & (src < n) & ((degree[dst] >= 2) | (dst < n))
    record_record = linked & (dst < n)
    record = np.concatenate([src[linked], dst[record_record]])
    rule = np.concatenate([edges["rule"].to_numpy()[linked], edges["rule"].to_numpy()[record_record]]).astype(np.int64)
    id_type = np.concatenate([edges["type"].to_numpy()[linked], edges["type"].to_numpy()[record_record]]).astype(np.int64)
    is_rule = rule != vocab.rule_code(IDENTIFIER_RULE)
    priority = np.array([config.identity.types[t].priority for t in vocab.types], dtype=np.int64)
    priority = np.append(priority, priority.max(initial=0) + 1)  # probabilistic links rank last
    labels = np.array(list(vocab.rules) + list(vocab.types) + [PROBABILISTIC], dtype=object)
    label = np.where(is_rule, rule, len(vocab.rules) + id_type)
    best = Groups.of(record, tiebreak=np.where(is_rule, -1, priority[id_type]) * len(labels) + label)
    out = np.full(n, "singleton", dtype=object)
    out[best.keys] = labels[best.first(label)]
    return out


def _probabilistic_edges(match, n_types: int, vocab: Vocabulary) -> pd.DataFrame:
    links = match.links()
    return pd.DataFrame(
        {
            "src": match.left[links],
            "dst": match.right[links],
            "type": np.int16(n_types),
            "rule": np.int16(vocab.rule_code(IDENTIFIER_RULE)),
            "explicit": False,
            "count": np.int64(1),
            "first_seen": np.full(len(links), np.datetime64("NaT"), dtype="datetime64[ns]"),
            "score": match.probability[links],
        }
    )


def _match_probability(n_records: int, match, accepted_links: np.ndarray) -> np.ndarray:
    """Per record, the highest probability of an accepted probabilistic link it has (NaN: none)."""
    out = np.full(n_records, -np.inf)
    for ends in (match.left[accepted_links], match.right[accepted_links]):
        np.maximum.at(out, ends, match.probability[accepted_links])
    return np.where(np.isfinite(out), out, np.nan)


def _ingest_actions(parts: list[SourceTables]) -> pd.DataFrame:
    """The ingest jobs' policy actions, one row per action, source, type, value and reason with the
    rows counted over all the source's files."""
    actions = _concat([a for p in parts for a in p.actions], ACTION_COLUMNS)
    if not len(actions):
        return actions
    keys = [c for c in ACTION_COLUMNS if c != "count"]
    return actions.groupby(keys, sort=True, dropna=False, observed=True)["count"].sum().reset_index()[ACTION_COLUMNS]


def _flagged_of(parts: list[SourceTables]) -> pd.DataFrame:
    """The records' policy actions (FLAGGED_COLUMNS with `source`), by record_id as build_graph
    numbers the records."""
    frames, offset = [], 0
    for part in (p for p in parts if p.records is not None):
        if part.flagged is not None and len(part.flagged):
            frames.append(part.flagged.assign(source=part.name, record_id=part.flagged["record_pos"] + offset))
        offset += len(part.records)
    return _concat(frames, ["record_id", *ACTION_COLUMNS[:-1]])


def action_persons(actions: pd.DataFrame, flagged: pd.DataFrame, record_pid: pd.Series) -> pd.Series:
    """Per action row: the person whose records carried every row it counts (NA when rows of
    several persons, of no person, or outside any record, e.g. events or rejected rows, did): an
    invalid or blocked value of one person's records is that person's data (forget erases it)."""
    keys = ACTION_COLUMNS[:-1]
    out = pd.Series(pd.NA, index=actions.index, dtype="str")
    if not len(actions) or not len(flagged):
        return out
    held = flagged[keys].astype("str").assign(person_id=record_pid.take(flagged["record_id"].to_numpy()).to_numpy())
    per = held.groupby(keys, sort=False, dropna=False).agg(
        rows=("person_id", "size"), with_person=("person_id", "count"), persons=("person_id", "nunique"),
        person=("person_id", "first")).reset_index()
    joined = actions[keys].astype("str").merge(per, on=keys, how="left")
    owned = ((joined["rows"] == actions["count"].to_numpy()) & (joined["with_person"] == joined["rows"])
             & (joined["persons"] == 1)).to_numpy(bool)
    out[owned] = joined.loc[owned, "person"].astype("str").to_numpy()
    return out


def _matching_attributes(config: Config, attributes: dict[str, pd.Series] | None) -> dict[str, pd.Series] | None:
    from resolver.matching.attributes import matching_columns

    return None if attributes is None else {column: attributes[column] for column in matching_columns(config)}


def _attributes_of(parts: list[SourceTables]) -> dict[str, pd.Series] | None:
    """The records' match attributes, in record order (None when no part has records)."""
    frames = [p.attributes for p in parts if p.records is not None and p.attributes is not None]
    if not frames:
        return None
    table = pd.concat(frames, ignore_index=True)
    return {column: table[column] for column in table.columns}


def resolve(config: Config, parts: list[SourceTables], log: StageLog, vocab: Vocabulary,
            model_path: Path | None = None, backend: Backend = CPU, previous: State | None = None,
            run_id: str = "", now: pd.Timestamp | None = None, reuse: Reuse | None = None,
            decisions: pd.DataFrame | None = None) -> Resolution:
    attributes = _attributes_of(parts)  # computed per part by the ingest jobs
    session_parts = [p.sessions for p in parts if p.sessions is not None and len(p.sessions)]
    sessions = pd.concat(session_parts, ignore_index=True) if session_parts else None
    flagged = _flagged_of(parts)  # parts release their tables below
    with log.stage("graph:build") as entry:
        records, nodes, edges = build_graph(parts)
        from resolver.matching.attributes import normalization_report

        attribute_report, attribute_warnings = normalization_report(config, records, attributes)
        records = records[RECORD_COLUMNS + [c for c in raw_fields(config) if c in records]]  # what is read later (memory)
        entry["rows_out"] = len(edges)
    for part in parts:
        part.release_graph_inputs()  # what build_graph did not consume already
    n_records = len(records)
    with log.stage("graph:policy+components", rows_in=len(edges)) as entry:
        result = resolve_graph(n_records, nodes, edges, config.identity, backend=backend)
        entry["rows_out"] = int(result.labels.max() + 1) if len(result.labels) else 0

    match = None
    deterministic = result.labels[:n_records].copy()  # a copy: the first graph's labels go when it is redone
    if config.matching is not None and config.matching.enabled:
        from resolver.matching.match import DECISIONS, match_records

        match = match_records(records, result.labels, config, model_path, stage=log.stage, backend=backend,
                              reuse=reuse, member_keys=record_member_keys(records) if previous is not None else None,
                              attributes=_matching_attributes(config, attributes))
        steward = None
        if decisions is not None and len(decisions):  # review decisions: must-links and cannot-links
            from resolver.state.review import apply_decisions

            steward = apply_decisions(decisions, records, match, record_member_keys(records), deterministic)
        match.release_comparison_inputs()  # pairs are compared, scored and decided: explanations need less
        links = match.links()
        if len(links):
            n_det_edges = len(edges)
            edges = pd.concat([edges.assign(score=0.0), _probabilistic_edges(match, len(vocab.types), vocab)],
                              ignore_index=True)
            with log.stage("graph:with probabilistic links", rows_in=len(edges)) as entry:
                result = resolve_graph(n_records, nodes, edges, config.identity, config.matching.link_limits,
                                       config.matching.max_person_records, backend)
                entry["rows_out"] = int(result.labels.max() + 1)
            cut = np.asarray(result.edge_status.codes[n_det_edges:]) == CUT
            match.decision[links[cut]] = DECISIONS.index("guard_cut")
            match.cut_type = np.full(len(match.left), -1, dtype=np.int64)
            match.cut_type[links] = result.cut_type[n_det_edges:]
        if steward is not None:
            from resolver.state.review import check_constraints

            match.summary["review_decisions"] = check_constraints(steward, result.labels, deterministic, match)

    with log.stage("persons", rows_in=len(result.labels)) as entry:
        identity_map, identifier_map, persons, carried = _person_tables(
            config, vocab, records, nodes, edges, result, deterministic, match, previous, run_id, now, backend)
        entry["rows_out"] = len(persons)
    # From here on only the tables above are read: the graph goes (memory).
    graph_actions = result.actions
    del nodes, edges, result, deterministic

    with log.stage("golden records", rows_in=n_records) as entry:
        from resolver.compute import dask_engine

        engine = dask_engine.active()
        if engine is not None:  # persons in buckets, one survivorship task per bucket
            golden = dask_engine.golden_records(engine, records, identity_map["person_id"], persons["person_id"],
                                                config, attributes)
        else:
            golden = build_golden(records, identity_map["person_id"], persons["person_id"], config, attributes)
        entry["rows_out"] = len(golden.conflicts)
    del attributes  # golden records were their last reader (memory)
    records = records[RECORD_COLUMNS]  # and of the records' attributes

    stitched = None
    if config.stitching is not None and config.stitching.enabled and sessions is not None:
        from resolver.persons.stitching import household_keys, stitch

        with log.stage("stitching: anonymous visitors", rows_in=len(sessions)) as entry:
            stitched = stitch(sessions, identifier_map, persons, config.stitching, backend=backend,
                              households=household_keys(golden.golden_records))
            entry["rows_out"] = stitched.summary["stitched_probabilistic"]
    rejects = _concat([r for p in parts for r in p.rejects], REJECT_COLUMNS)
    ingest_actions = _ingest_actions(parts)
    ingest_actions["person_id"] = action_persons(ingest_actions, flagged, identity_map["person_id"])
    del flagged
    graph_actions = graph_actions.assign(person_id=pd.Series(pd.NA, index=graph_actions.index, dtype="str"))
    actions = _concat([ingest_actions, graph_actions], ACTION_COLUMNS + ["person_id"])
    resolution = Resolution(records, identity_map, identifier_map, persons, actions, rejects, summary={},
                            golden_records=golden.golden_records, conflicts=golden.conflicts)
    resolution.golden = golden.summary
    resolution.attributes = attribute_report
    resolution.warnings = config.warnings() + attribute_warnings
    if stitched is not None:
        resolution.anonymous_map, resolution.stitch_review = stitched.anonymous_map, stitched.review
        resolution.stitching = stitched.summary
    resolution.carried = carried
    if carried is not None:
        resolution.lineage = pd.concat([previous.lineage, carried.lineage], ignore_index=True)
    resolution.match = match
    if match is not None:
        with log.stage("match:outputs"):
            _matching_outputs(resolution, match, config, vocab)
    return resolution


def _person_tables(config: Config, vocab: Vocabulary, records: pd.DataFrame, nodes: pd.DataFrame, edges: pd.DataFrame,
                   result, deterministic: np.ndarray, match, previous: State | None, run_id: str,
                   now: pd.Timestamp | None, backend: Backend):
    """Identity map, identifier map and persons from the resolved graph (and the carried ids
    when the run has a state)."""
    n_records = len(records)
    labels = result.labels
    active = ~records["is_deleted"].to_numpy()
    evidence = np.array([config.identity.types[t].evidence for t in vocab.types], dtype=bool)
    types = nodes["type"].to_numpy()
    node_evidence = evidence[types] & ~result.hub
    is_person_member = np.concatenate([active, node_evidence & (nodes["events"].to_numpy() > 0)])
    is_person = np.zeros(labels.max() + 1 if len(labels) else 0, dtype=bool)
    is_person[labels[is_person_member]] = True
    no_person = ~is_person[labels]
    member_keys = _member_keys(records, nodes)
    label_keys = smallest_member_keys(labels, member_keys)
    node_status = np.select([result.hub, ~evidence[types], no_person[n_records:]], [1, 2, 3], 0)
    linked = node_status == 0
    carried = None
    if previous is not None:  # persistent ids: this run's persons take the previous run's ids
        is_member = np.concatenate([active, linked])
        is_record = np.arange(len(labels)) < n_records
        carried = carry_ids(previous, labels, member_keys, is_member, is_record, label_keys,
                            _label_age(labels, records, nodes), is_person, run_id,
                            now if now is not None else pd.Timestamp.now(tz="UTC"))
        label_keys = carried.label_keys
    # The records' ids and the identifiers' apart: a slice of one text column for both would keep
    # all of it alive as long as either table lives (memory).
    record_pid = format_person_ids(label_keys[labels[:n_records]], missing=no_person[:n_records])
    identifier_pid = format_person_ids(label_keys[labels[n_records:]], missing=no_person[n_records:])
    # A linked value's person, or an observed value's when only that person's data carried it.
    seen_by = observed_by(n_records, labels, is_person, node_status == 2, edges, result.edge_status)
    identifier_pid = identifier_pid.where(linked, format_person_ids(label_keys[np.maximum(seen_by, 0)],
                                                                    missing=seen_by < 0))

    # Text columns stay Arrow-backed or categorical: millions of Python strings cost seconds and GBs.
    identity_map = records[["record_id", "source", "record_key", "source_key", "file", "row"]].copy(deep=False)
    identity_map["person_id"] = record_pid
    record_status = np.where(active, 0, np.where(no_person[:n_records], 2, 1))
    identity_map["status"] = pd.Categorical.from_codes(record_status, categories=["active", "merged", "deleted"])
    identity_map["linked_by"] = pd.Categorical(_linked_by(records, edges, result.edge_status, config, vocab))
    identity_map["deterministic_group"] = deterministic
    if match is not None:
        from resolver.matching.match import DECISIONS

        accepted = match.decision == DECISIONS.index("link")
        identity_map["match_probability"] = _match_probability(n_records, match, np.flatnonzero(accepted))

    identifier_map = pd.DataFrame(
        {
            "id_type": pd.Categorical.from_codes(types, categories=list(vocab.types)),
            "value": nodes["value"],
            "hash": nodes["hash"],
            "records": nodes["records"],
            "events": nodes["events"],
            "first_seen": nodes["first_seen"],
            "last_seen": nodes["last_seen"],
            "person_id": identifier_pid,
            "status": pd.Categorical.from_codes(node_status, categories=["linked", "hub", "observed", "orphan"]),
            "degree": result.degree,
        },
        copy=False,  # shares the nodes' columns (the nodes go after this stage) instead of copying them (memory)
    )
    persons = _persons(labels, is_person, label_keys, records, nodes, linked, backend)
    return identity_map, identifier_map, persons, carried


def observed_by(n_records: int, labels: np.ndarray, is_person: np.ndarray, observed: np.ndarray,
                edges: pd.DataFrame, edge_status: pd.Categorical) -> np.ndarray:
    """Per identifier node: the label of the one person every record and event that carried it
    belongs to, for observed (non-evidence) values; -1 for others, and for values seen on several
    persons' data or on data of no person. Such a value is that person's data (forget erases it)."""
    out = np.full(len(labels) - n_records, -1, dtype=np.int64)
    src, dst = edges["src"].to_numpy(np.int64), edges["dst"].to_numpy(np.int64)
    kept = np.asarray(edge_status.codes) == OBSERVED
    src, dst = src[kept], dst[kept]
    is_observed = np.concatenate([np.zeros(n_records, bool), observed])
    node = np.where(is_observed[dst], dst, src)  # an observed value's edge never joins two of them
    other = np.where(is_observed[dst], src, dst)
    hit = is_observed[node]
    if not hit.any():
        return out
    pairs = np.unique(np.stack([node[hit] - n_records, labels[other[hit]]]), axis=1)
    single = np.bincount(pairs[0], minlength=len(out)) == 1
    mine = single[pairs[0]] & is_person[pairs[1]]
    out[pairs[0][mine]] = pairs[1][mine]
    return out


def _matching_outputs(res: Resolution, match, config: Config, vocab: Vocabulary) -> None:
    """Explained links and review queue, scored pairs, blocking keys, model, summary section."""
    from resolver.matching.match import DECISIONS, explain

    person_ids = res.identity_map["person_id"]
    names = np.array(list(vocab.types) + [PROBABILISTIC], dtype=object)
    link, review, cut = (DECISIONS.index(d) for d in ("link", "review", "guard_cut"))
    links = np.flatnonzero(match.decision == link)
    steward = match.steward[links] == 1 if match.steward is not None else np.zeros(len(links), bool)
    res.match_links = explain(match, links, res.records, person_ids,
                              np.where(steward, "accepted by a reviewer", "auto-merge").astype(object))
    in_band = np.flatnonzero(match.decision == review)
    cut_rows = np.flatnonzero(match.decision == cut)
    cut_reason = [f"guard: would give one person more {names[t]} values than allowed" if t < len(vocab.types)
                  else f"guard: would make a person of more than {config.matching.max_person_records} records"
                  for t in (match.cut_type[cut_rows] if match.cut_type is not None else [])]
    rows = np.concatenate([in_band, cut_rows])
    band_reason = [
        f"{match.prepared[v].name} disagrees: never merged automatically"
        if v >= 0 and match.probability[i] >= config.matching.thresholds.auto_merge else "review band"
        for i, v in zip(in_band, match.veto[in_band])
    ]
    if match.steward is not None:  # links a reviewer's rejection holds back (resolver.state.review)
        from resolver.state.review import HELD_REASON, STEWARD_HELD

        band_reason = [HELD_REASON if match.steward[i] == STEWARD_HELD else r for i, r in zip(in_band, band_reason)]
    reasons = np.array(band_reason + cut_reason, dtype=object)
    order = np.argsort(-match.probability[rows], kind="stable")
    res.review_queue = explain(match, rows[order], res.records, person_ids, reasons[order])
    keep = match.probability >= config.matching.scored_pairs_min
    res.scored_pairs = pd.DataFrame(
        {
            "record_id_l": match.left[keep],
            "record_id_r": match.right[keep],
            "probability": match.probability[keep],
            "match_weight": match.weight[keep],
            "rule": pd.Categorical.from_codes(match.rule[keep].astype(np.int64), categories=match.blocking.rules),
            "decision": pd.Categorical.from_codes(match.decision[keep].astype(np.int64), categories=list(DECISIONS)),
        }
    )
    res.blocking_keys = pd.DataFrame(
        {"record_id": np.arange(len(res.records), dtype=np.int64),
         **{rule: match.blocking.keys[r] for r, rule in enumerate(match.blocking.rules)}}
    )
    res.model = match.model
    res.matching = {**match.summary, "decisions": match.decision_counts()}  # after the guards' cuts
    match.release_explanation_inputs()


def _persons(
    labels: np.ndarray, is_person: np.ndarray, label_keys: np.ndarray, records: pd.DataFrame, nodes: pd.DataFrame,
    node_linked: np.ndarray, backend: Backend = CPU,
) -> pd.DataFrame:
    """One row per person, in person-id order, aggregated over the dense component labels (group-bys
    by the backend: cuDF when installed on a GPU, else numpy on the host)."""
    n, k = len(records), len(is_person)
    of_person = is_person[labels[:n]]
    never, nat = np.iinfo(np.int64).max, np.iinfo(np.int64).min
    by_record = group_aggregate(backend.frames, labels[:n][of_person], {
        "records": Aggregate(None, "count"),
        "sources": Aggregate(pd.factorize(records["source"])[0][of_person], "nunique"),
    }, k)
    first_seen = nodes["first_seen"].to_numpy().view(np.int64)[node_linked]
    by_identifier = group_aggregate(backend.frames, labels[n:][node_linked], {
        "identifiers": Aggregate(None, "count"),
        "events": Aggregate(nodes["anchored_events"].to_numpy(np.int64)[node_linked], "sum"),
        "first": Aggregate(np.where(first_seen == nat, never, first_seen), "min", fill=never),  # NaT: unknown
        "last": Aggregate(nodes["last_seen"].to_numpy().view(np.int64)[node_linked], "max", fill=nat),
    }, k)
    counts = {name: agg[name] for agg, name in ((by_record, "records"), (by_record, "sources"),
                                               (by_identifier, "identifiers"), (by_identifier, "events"))}
    first = np.where(by_identifier["first"] == never, nat, by_identifier["first"])
    last = by_identifier["last"]
    chosen = np.flatnonzero(is_person)
    chosen = chosen[np.argsort(label_keys[chosen], kind="stable")]
    return pd.DataFrame(
        {
            "person_id": format_person_ids(label_keys[chosen]),
            **{name: values[chosen].astype(np.int64) for name, values in counts.items()},
            "is_anonymous": counts["records"][chosen] == 0,
            "first_seen": first[chosen].view("datetime64[ns]"),
            "last_seen": last[chosen].view("datetime64[ns]"),
        },
        copy=False,  # fresh arrays: not copied into consolidated blocks (memory)
    )


def _summary(config: Config, parts: list[SourceTables], res: Resolution, log: StageLog, run_id: str, started: datetime) -> dict:
    per_source: dict[str, dict] = {}
    for p in parts:
        entry = per_source.setdefault(p.name, {"rows_read": 0, "resolved": 0, "rejected": 0, "suppressed": 0})
        entry["rows_read"] += p.rows_read
        entry["resolved"] += p.resolved
        entry["suppressed"] += p.suppressed
    for name, entry in per_source.items():
        entry["rejected"] = int((res.rejects["source"] == name).sum())
        entry["accounted"] = entry["rows_read"] == entry["resolved"] + entry["rejected"] + entry["suppressed"]
    read = sum(s["rows_read"] for s in per_source.values())
    resolved = sum(s["resolved"] for s in per_source.values())
    rejected = sum(s["rejected"] for s in per_source.values())
    suppressed = sum(s["suppressed"] for s in per_source.values())
    status_counts = res.identity_map["status"].value_counts().to_dict()
    sizes = res.persons["records"] if len(res.persons) else pd.Series(dtype=int)
    return {
        "run_id": run_id,
        "resolver_version": __version__,
        "started": started.isoformat(),
        "finished": datetime.now(timezone.utc).isoformat(),
        "guards": config.identity.guards,
        "rows": {"read": read, "resolved": resolved, "rejected": rejected, "suppressed": suppressed,
                 "accounted": read == resolved + rejected + suppressed},
        "sources": per_source,
        "records": {k: int(v) for k, v in status_counts.items()},
        "events": int(sum(p.events for p in parts)),
        "persons": {
            "total": len(res.persons),
            "known": int((~res.persons["is_anonymous"]).sum()) if len(res.persons) else 0,
            "anonymous": int(res.persons["is_anonymous"].sum()) if len(res.persons) else 0,
            "largest_by_records": int(sizes.max()) if len(sizes) else 0,
        },
        "identifiers": {k: int(v) for k, v in res.identifier_map["status"].value_counts().to_dict().items()},
        "policy_actions": {k: int(v) for k, v in res.policy_actions["action"].value_counts().to_dict().items()},
        "warnings": res.warnings,
        "attributes": res.attributes,
        "matching": res.matching,
        "golden": res.golden,
        **({"stitching": res.stitching} if res.stitching is not None else {}),
        "stages": log.stages,
        "peak_rss_mb": round(_peak_rss_mb(), 1),
        "peak_worker_rss_mb": round(_peak_rss_mb("children"), 1),
    }


def plan_matching(config: Config):
    """Blocking plan from the records alone: pair counts per rule and the largest blocks, before
    any pair is made (reads and normalizes the records sources; events are not needed)."""
    from resolver.matching.blocking import build_blocking_keys, pair_scope

    if config.matching is None:
        raise ConfigError("the configuration has no `matching` section to plan")
    vocab = Vocabulary.from_config(config)
    jobs = [job for job in plan_ingest(config) if config.sources[job.source_index].kind == "records"]
    parts = _run_jobs(config, jobs, vocab)
    reject_cross_file_duplicates(config, parts)
    records = pd.concat([p.records for p in parts], ignore_index=True)
    active = ~records["is_deleted"].to_numpy(bool)
    if config.matching.enabled:
        attributes = _matching_attributes(config, _attributes_of(parts))
    else:  # the jobs put in match form only what golden records need
        from resolver.matching.attributes import match_attributes

        attributes = match_attributes(records, config)
    scope = pair_scope(config.matching.link_type, records["source"])
    return build_blocking_keys(config.matching.blocking, attributes, active, scope=scope), len(records)


def config_digest(config: Config) -> str:
    """What the state's memo, model and pairs depend on: identity, matching, survivorship and the
    default phone region (not the sources' paths or the run's folders)."""
    import hashlib

    parts = config.model_dump_json(include={"identity", "matching", "golden", "stitching"}) + config.run.default_region
    return hashlib.sha256(parts.encode()).hexdigest()[:16]


def run(config: Config, report: Reporter | None = None, write: bool = True, model_path: Path | None = None,
        backend: Backend | None = None, state_dir: Path | None = None, full: bool = False,
        truth: Path | None = None) -> Resolution:
    """Resolve the configured sources on the configured engine (config.engine: local, or dask);
    see _run for what a run does."""
    return_freed_memory()
    backend = backend or select_backend(config.run.backend)
    if config.engine.name == "local":
        return _run(config, report, write, model_path, backend, state_dir, full, truth=truth)
    from dataclasses import replace

    from resolver.compute.dask_engine import dask_engine

    with dask_engine(config.engine, config.run.workers, gpu=backend.on_gpu_path) as engine:
        if not backend.on_gpu_path:  # components by label propagation on the cluster
            backend = replace(backend, components="dask")
        res = _run(config, report, write, model_path, backend, state_dir, full, engine.description, truth)
    return res


def _run(config: Config, report: Reporter | None, write: bool, model_path: Path | None, backend: Backend,
         state_dir: Path | None, full: bool, engine: dict | None = None, truth: Path | None = None) -> Resolution:
    """Resolve the configured sources and (by default) write the outputs atomically. The backend
    is config.run.backend unless one is given (a BackendUnavailable error says what is missing).

    With a state directory the run starts from the previous run's state: persistent person ids,
    and (unless `full`, or the configuration changed) an incremental run: values the state's memo
    knows are not normalized again, pairs compared before between unchanged records are not
    compared again, and the state's model scores the pairs instead of training a new one. The run
    commits its outputs and its state together (StateStore.commit_run). Review decisions in the
    state are applied (resolver.state.review), and the run appends its row to the state's history.
    `truth` (a truth folder or records file) adds quality curves to report.html."""
    started = datetime.now(timezone.utc)
    run_id = started.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8]
    store = StateStore(state_dir) if state_dir is not None else None
    recovered = store.recover() if store is not None else None  # a commit a kill interrupted
    previous = store.load() if store is not None else None
    digest = config_digest(config)
    incremental = previous is not None and not full and previous.config_digest == digest and previous.runs > 0
    memo = None
    if previous is not None:
        memo = NormalizationMemo(tables=previous.memo if incremental else {},
                                 folder=store.current() / "memo" if incremental and store.current() else None)
    reuse = Reuse(previous.model, previous.pairs, previous.keys) if incremental else None
    decisions = load_decisions(state_dir) if store is not None else None
    snapshots = None
    if previous is not None:
        snapshots = Snapshots(previous.snapshots, previous.files, digest, reuse=incremental)
    log = StageLog(report=report)
    wall = time.perf_counter()
    vocab = Vocabulary.from_config(config)
    parts = ingest_all(config, log, vocab, memo, snapshots)
    suppressed = None
    if previous is not None and len(previous.tombstones):
        with log.stage("erasure: suppress tombstoned data") as entry:
            suppressed = suppress(parts, previous.tombstones, previous.salt)
            entry["rows_out"] = suppressed.records
    absorb_lookups(memo, parts, snapshots)
    writer = SnapshotWriter(store.pending(run_id)) if store is not None and write else None
    try:
        if writer is not None:  # new snapshots (each file's tables alone) are written while the run goes on
            writer.start(parts, snapshots.previous, snapshots.lookups)
        reject_cross_file_duplicates(config, parts)
        with memo.active() if memo is not None else nullcontext():
            res = resolve(config, parts, log, vocab, model_path, backend, previous, run_id, pd.Timestamp(started), reuse,
                          decisions)
        res.summary = _summary(config, parts, res, log, run_id, started)
        res.summary["backend"] = backend.describe()
        res.summary["engine"] = engine or {"engine": "local", "workers": config.run.workers}
        if engine is not None:
            from resolver.compute import dask_engine

            res.summary["engine"]["worker_peak_rss_mb"] = dask_engine.active().worker_peak_rss_mb()
        if suppressed is not None:
            res.summary["suppressed"] = suppressed.as_dict()
        if res.carried is not None:
            res.summary["persistent_ids"] = {"state": str(state_dir), "previous_run": previous.run_id, **res.carried.counts}
            res.summary["incremental"] = {"incremental": incremental, "normalization": memo.stats(),
                                          "parts_loaded_from_state": sum(p.loaded for p in parts),
                                          **({"pairs_compared": res.matching["pairs_compared"],
                                              "pairs_reused": res.matching["pairs_reused"]} if res.matching else {})}
        if recovered is not None:
            res.summary["recovered_commit"] = recovered
        res.summary["seconds"] = round(time.perf_counter() - wall, 3)
        if write:
            res.summary["output_dir"] = str(config.output_path())
            page, row = report_for_run(res, state_dir if store is not None else None, decisions, truth)
            if store is None:
                write_outputs(config.output_path(), res, files={REPORT_FILE: page})
            else:  # the outputs and the state version go live together (StateStore.commit_run)
                state = _next_state(previous, res, memo, digest)
                state.snapshots, state.files = writer.finish(), snapshots.files
                store.commit_run(state, run_id, config.output_path(),
                                 lambda folder: stage_outputs(folder, res, files={REPORT_FILE: page}), row)
    finally:
        if writer is not None:
            writer.close()
    return res


def _next_state(previous: State, res: Resolution, memo: NormalizationMemo, digest: str) -> State:
    """The state this run hands on."""
    match = res.match
    handed_on = memo.handed_on()
    return State(members=res.carried.members, persons=res.carried.persons, lineage=res.lineage,
                 tombstones=previous.tombstones, audit=previous.audit, salt=previous.salt,
                 runs=previous.runs + 1, config_digest=digest, memo=handed_on,
                 model=match.model.to_dict() if match is not None else None,
                 pairs=match.pair_cache if match is not None else None,
                 keys=match.key_cache if match is not None else None)
