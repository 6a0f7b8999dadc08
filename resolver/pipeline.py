"""The pipeline, the stages in order: ingest -> graph -> components -> matching ->
persons -> golden records -> stitching -> outputs; state in, state out.

Each stage is a function of its own module over tables (ingest/plan, graph/build, graph/guards,
matching/match, persons/tables, persons/golden, persons/stitching, matching/explain) and takes the
configuration sections it reads. `run` wires them together, times each stage (StageLog) and
accounts for every input row (resolution.run_summary); what a run takes from the state and hands
on is state/handover's. What a stage's inputs held is released at
the stage boundary where their last reader is done, before the next large allocation (memory).
"""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from resolver.compute.backend import CPU, Backend, select_backend
from resolver.compute.dispatch import choose, open_engine
from resolver.compute.engine import LOCAL, Engine
from resolver.compute.heap import return_freed_memory
from resolver.config import Config, ConfigError, IdentityConfig, MatchingConfig, StitchingConfig
from resolver.graph.build import build_graph, flagged_of, with_probabilistic_edges
from resolver.graph.guards import CUT, GraphResult, resolve_graph
from resolver.ids import record_member_keys
from resolver.ingest.attributes import normalization_report
from resolver.ingest.memo import NormalizationMemo
from resolver.ingest.remote import name_origins, publish, staged
from resolver.ingest.plan import absorb_lookups, attributes_of, ingest_actions, ingest_all, rejects_of, sessions_of
from resolver.ingest.snapshots import SnapshotWriter
from resolver.ingest.tables import SourceTables, Vocabulary, reject_cross_file_duplicates
from resolver.matching.explain import matching_outputs
from resolver.matching.match import MatchResult, match_records
from resolver.matching.plan import matching_attributes
from resolver.matching.reuse import Reuse
from resolver.matching.score import DECISIONS
from resolver.outputs.postgres_out import postgres_url, write_postgres
from resolver.outputs.report import REPORT_FILE, report_for_run
from resolver.outputs.writers import stage_outputs, write_outputs
from resolver.persons.golden import raw_fields
from resolver.persons.golden_buckets import golden_records
from resolver.persons.merge_candidates import MERGE_CANDIDATES_CSV, merge_candidates
from resolver.persons.stitching import StitchResult, household_keys, stitch
from resolver.persons.tables import person_tables, policy_actions
from resolver.resolution import RECORD_COLUMNS, Reporter, Resolution, StageLog, run_summary
from resolver.state.erasure import Suppressed, suppress
from resolver.state.handover import StartingState, next_state, state_in, state_summary
from resolver.state.review import Constraints, apply_decisions, check_constraints
from resolver.state.store import State


def run(config: Config, report: Reporter | None = None, write: bool = True, model_path: Path | None = None,
        backend: Backend | None = None, state_dir: Path | None = None, full: bool = False,
        truth: Path | None = None, file_names: dict[str, str] | None = None) -> Resolution:
    """Resolve the configured sources on the configured engine (config.engine: local, or dask);
    see _run for what a run does. `file_names`: what the outputs' `file` columns call some input
    files (the Python API's tables: `data[<source>]`)."""
    return_freed_memory()
    _check_output_libraries(config, write)
    backend = backend or select_backend(config.run.backend)
    # Remote sources are read from a local cache; a remote output folder is written locally, then
    # published (ingest/remote.py).
    with staged(config, state_dir) as (local, publish_to, origins):
        with open_engine(local.engine, local.run.workers, gpu=backend.on_gpu_path) as engine:
            res = _run(local, report, write, model_path, backend, state_dir, full, engine, truth,
                       {**(file_names or {}), **origins})
        if write and local.run.postgres is not None:
            options = local.run.postgres
            write_postgres(local.output_path(), postgres_url(options.url_env), options.db_schema)
        if write and publish_to is not None:
            publish(local.output_path(), publish_to)
            res.summary["published_to"] = publish_to
    return res


def _check_output_libraries(config: Config, write: bool) -> None:
    """A missing library for a configured output fails now, not after the whole run."""
    import importlib.util

    needs = [("duckdb", "run.duckdb", "duckdb")] if write and config.run.duckdb else []
    needs += [("psycopg", "run.postgres", "serve")] if write and config.run.postgres is not None else []
    for module, option, extra in needs:
        if importlib.util.find_spec(module) is None:
            raise ConfigError(f"{option} needs {module}: pip install 'resolver-identity[{extra}]'")


def _run(config: Config, report: Reporter | None, write: bool, model_path: Path | None, backend: Backend,
         state_dir: Path | None, full: bool, engine: Engine = LOCAL, truth: Path | None = None,
         origins: dict[str, str] | None = None) -> Resolution:
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
    start = state_in(config, state_dir, full)
    log = StageLog(report=report)
    wall = time.perf_counter()
    vocab = Vocabulary.from_config(config)
    parts = ingest_all(config, log, vocab, start.memo, start.snapshots, engine)
    suppressed = _suppress_erased(parts, start.previous, log)
    absorb_lookups(start.memo, parts, start.snapshots)
    writer = SnapshotWriter(start.store.pending(run_id)) if start.store is not None and write else None
    try:
        if writer is not None:  # new snapshots (each file's tables alone) are written while the run goes on
            writer.start(parts, start.snapshots.previous, start.snapshots.lookups)
        reject_cross_file_duplicates(config, parts)
        res = resolve(config, parts, log, vocab, model_path, backend, start.previous, run_id, pd.Timestamp(started),
                      start.reuse, start.decisions, engine, start.memo)
        name_origins(res, origins or {})  # remote rows name their object, not its cached copy
        res.summary = run_summary(config.identity.guards, parts, res, log, run_id, started)
        res.summary["backend"] = backend.describe(components=choose("components", backend, engine))
        res.summary["engine"] = engine.summary()
        if suppressed is not None:
            res.summary["suppressed"] = suppressed.as_dict()
        if res.carried is not None:
            res.summary.update(state_summary(start, res, parts))
        if start.recovered is not None:
            res.summary["recovered_commit"] = start.recovered
        res.summary["seconds"] = round(time.perf_counter() - wall, 3)
        if write:
            _write(config, res, start, writer, run_id, truth)
    finally:
        if writer is not None:
            writer.close()
    return res


def _suppress_erased(parts: list[SourceTables], previous: State | None, log: StageLog) -> Suppressed | None:
    """Erased people's data dropped right after reading (their tombstones are in the state)."""
    if previous is None or not len(previous.tombstones):
        return None
    with log.stage("erasure: suppress tombstoned data") as entry:
        suppressed = suppress(parts, previous.tombstones, previous.salt)
        entry["rows_out"] = suppressed.records
    return suppressed


def _write(config: Config, res: Resolution, start: StartingState, writer: SnapshotWriter | None, run_id: str,
           truth: Path | None) -> None:
    """The outputs, with the report; with a state, committed together with the state this run
    hands on (StateStore.commit_run)."""
    res.summary["output_dir"] = str(config.output_path())
    page, row = report_for_run(res, start.directory, start.decisions, truth)
    files = {REPORT_FILE: page}
    if res.merge_candidates is not None and len(res.merge_candidates):  # for Salesforce's merge tools
        files[MERGE_CANDIDATES_CSV] = res.merge_candidates.to_csv(index=False)
    if start.store is None:
        write_outputs(config.output_path(), res, files=files, duckdb=config.run.duckdb)
        return
    state = next_state(start, res)
    state.snapshots, state.files = writer.finish(), start.snapshots.files
    start.store.commit_run(state, run_id, config.output_path(),
                           lambda folder: stage_outputs(folder, res, files=files, duckdb=config.run.duckdb), row)


def resolve(config: Config, parts: list[SourceTables], log: StageLog, vocab: Vocabulary,
            model_path: Path | None = None, backend: Backend = CPU, previous: State | None = None,
            run_id: str = "", now: pd.Timestamp | None = None, reuse: Reuse | None = None,
            decisions: pd.DataFrame | None = None, engine: Engine = LOCAL,
            memo: NormalizationMemo | None = None) -> Resolution:
    """The stages after ingest, in order: graph, components, matching (with the graph redone with
    its links), persons, golden records, stitching, then the tables of the Resolution."""
    attributes = attributes_of(parts)  # computed per part by the ingest jobs
    sessions = sessions_of(parts)
    flagged = flagged_of(parts)  # the graph stage releases the parts' tables
    records, nodes, edges, attribute_report, attribute_warnings = _graph(config, parts, attributes, log)
    n_records = len(records)
    result = _components(config.identity, None, n_records, nodes, edges, backend, engine, log)

    match = None
    deterministic = result.labels[:n_records].copy()  # a copy: the first graph's labels go when it is redone
    if config.matching is not None and config.matching.enabled:
        match, steward = _match(config, records, result.labels, deterministic, attributes, log, model_path, backend,
                                engine, previous, reuse, decisions)
        links = match.links()
        if len(links):  # the graph again, with the links: the guards may cut some
            n_det_edges = len(edges)
            edges = with_probabilistic_edges(edges, match, vocab)
            result = _components(config.identity, config.matching, n_records, nodes, edges, backend, engine, log)
            _mark_guard_cuts(match, links, result, n_det_edges)
        if steward is not None:
            match.summary["review_decisions"] = check_constraints(steward, result.labels, deterministic, match)

    with log.stage("persons", rows_in=len(result.labels)) as entry:
        identity_map, identifier_map, persons, carried, record_person_row = person_tables(
            config.identity, vocab, records, nodes, edges, result, deterministic, match, previous, run_id, now, backend)
        entry["rows_out"] = len(persons)
    # From here on only the tables above are read: the graph goes (memory).
    graph_actions = result.actions
    del nodes, edges, result, deterministic

    with log.stage("golden records", rows_in=n_records) as entry:
        golden = golden_records(engine, backend, records, identity_map["person_id"], persons["person_id"], config,
                                attributes, memo, record_person_row)
        entry["rows_out"] = len(golden.conflicts)
    del attributes  # golden records were their last reader (memory)
    records = records[RECORD_COLUMNS]  # and of the records' attributes

    stitched = _stitch(config.stitching, sessions, identifier_map, persons, golden.golden_records, backend, log)
    rejects = rejects_of(parts)
    actions = policy_actions(ingest_actions(parts), flagged, graph_actions, identity_map["person_id"])
    del flagged  # action_persons was its last reader (memory)
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
            matching_outputs(resolution, match, config.matching, vocab)
            resolution.merge_candidates = merge_candidates(resolution.review_queue, records, config)
    return resolution


def _graph(config: Config, parts: list[SourceTables], attributes: dict[str, pd.Series] | None,
           log: StageLog) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, dict, list[str]]:
    """Records, nodes and edges (build_graph), and the attributes' normalization report; the parts'
    graph inputs and the records' columns no later stage reads are released (memory)."""
    with log.stage("graph:build") as entry:
        records, nodes, edges = build_graph(parts)
        attribute_report, attribute_warnings = normalization_report(config, records, attributes)
        records = records[RECORD_COLUMNS + [c for c in raw_fields(config) if c in records]]
        entry["rows_out"] = len(edges)
    for part in parts:
        part.release_graph_inputs()  # what build_graph did not consume already
    return records, nodes, edges, attribute_report, attribute_warnings


def _components(identity: IdentityConfig, matching: MatchingConfig | None, n_records: int, nodes: pd.DataFrame,
                edges: pd.DataFrame, backend: Backend, engine: Engine, log: StageLog) -> GraphResult:
    """The identity policy and the components (resolve_graph); with `matching`, of the graph with
    its probabilistic links, under matching's limits."""
    if matching is None:
        with log.stage("graph:policy+components", rows_in=len(edges)) as entry:
            result = resolve_graph(n_records, nodes, edges, identity, backend=backend, engine=engine)
            entry["rows_out"] = int(result.labels.max() + 1) if len(result.labels) else 0
        return result
    with log.stage("graph:with probabilistic links", rows_in=len(edges)) as entry:
        result = resolve_graph(n_records, nodes, edges, identity, matching.link_limits, matching.max_person_records,
                               backend, engine)
        entry["rows_out"] = int(result.labels.max() + 1)
    return result


def _match(config: Config, records: pd.DataFrame, labels: np.ndarray, deterministic: np.ndarray,
           attributes: dict[str, pd.Series] | None, log: StageLog, model_path: Path | None, backend: Backend,
           engine: Engine, previous: State | None, reuse: Reuse | None, decisions: pd.DataFrame | None,
           ) -> tuple[MatchResult, Constraints | None]:
    """Matching's pairs, compared, scored and decided (match_records), with the review decisions
    applied (the steward's constraints, checked once the graph is redone with the links); what
    only the comparisons needed is released (memory)."""
    match = match_records(records, labels, config, model_path, stage=log.stage, backend=backend,
                          reuse=reuse, member_keys=record_member_keys(records) if previous is not None else None,
                          attributes=matching_attributes(config, attributes), engine=engine)
    steward = None
    if decisions is not None and len(decisions):  # review decisions: must-links and cannot-links
        steward = apply_decisions(decisions, records, match, record_member_keys(records), deterministic)
    match.release_comparison_inputs()  # pairs are compared, scored and decided: explanations need less
    return match, steward


def _mark_guard_cuts(match: MatchResult, links: np.ndarray, result: GraphResult, n_det_edges: int) -> None:
    """The links the guards cut (edges after the first n_det_edges) are decided `guard_cut`, with
    the type whose limit cut them."""
    cut = np.asarray(result.edge_status.codes[n_det_edges:]) == CUT
    match.decision[links[cut]] = DECISIONS.index("guard_cut")
    match.cut_type = np.full(len(match.left), -1, dtype=np.int64)
    match.cut_type[links] = result.cut_type[n_det_edges:]


def _stitch(stitching: StitchingConfig | None, sessions: pd.DataFrame | None, identifier_map: pd.DataFrame,
            persons: pd.DataFrame, golden_records: pd.DataFrame, backend: Backend,
            log: StageLog) -> StitchResult | None:
    """Anonymous visitors to persons, when stitching is on and event sources have sessions."""
    if stitching is None or not stitching.enabled or sessions is None:
        return None
    with log.stage("stitching: anonymous visitors", rows_in=len(sessions)) as entry:
        stitched = stitch(sessions, identifier_map, persons, stitching, backend=backend,
                          households=household_keys(golden_records))
        entry["rows_out"] = stitched.summary["stitched_probabilistic"]
    return stitched
