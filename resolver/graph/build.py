"""The numeric identity graph: records and identifier values as nodes, one edge per node pair.

build_graph numbers the records first (in plan order), then the identifier values (in hash
order, so numbering never depends on input order), and collapses the records' observations and
the events' edges into distinct pairs. with_probabilistic_edges adds matching's links as
record-to-record edges, for the graph to be resolved again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from resolver.compute.cluster import connected_components
from resolver.compute.grouping import Groups, repeated_in_groups, unique_with_index_inverse
from resolver.config import ConfigError
from resolver.ingest.plan import concat_frames, stacked
from resolver.ingest.tables import ACTION_COLUMNS, IDENTIFIER_RULE, SourceTables, Vocabulary

if TYPE_CHECKING:  # matching runs after the graph; its links come back as edges (with_probabilistic_edges)
    from resolver.matching.match import MatchResult


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
    records = stacked([p.records for p in record_parts])
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
    node_hash, first_row, node_of_row = unique_with_index_inverse(hashes, mostly_distinct=True)  # identifiers
    n_nodes = len(node_hash)
    n_obs = len(observations)
    obs_node = node_of_row[:n_obs]
    ev_node = node_of_row[n_obs:]
    ev_frame = pd.concat(event_nodes, ignore_index=True) if event_nodes else None
    del event_nodes

    record_ids = observations["record_id"].to_numpy()
    record_time = records["timestamp"].to_numpy()[record_ids]
    distinct_record = ~repeated_in_groups(record_ids, obs_node, obs_node, n_records)  # (node, record) once
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


def flagged_of(parts: list[SourceTables]) -> pd.DataFrame:
    """The records' policy actions (FLAGGED_COLUMNS with `source`), by record_id as build_graph
    numbers the records."""
    frames, offset = [], 0
    for part in (p for p in parts if p.records is not None):
        if part.flagged is not None and len(part.flagged):
            frames.append(part.flagged.assign(source=part.name, record_id=part.flagged["record_pos"] + offset))
        offset += len(part.records)
    return concat_frames(frames, ["record_id", *ACTION_COLUMNS[:-1]])


def with_probabilistic_edges(edges: pd.DataFrame, match: MatchResult, vocab: Vocabulary) -> pd.DataFrame:
    """The edges (score 0) and then matching's links, for the graph to be resolved again."""
    return pd.concat([edges.assign(score=0.0), _probabilistic_edges(match, len(vocab.types), vocab)],
                     ignore_index=True)


def _probabilistic_edges(match: MatchResult, n_types: int, vocab: Vocabulary) -> pd.DataFrame:
    """The matching links as record-to-record edges of type n_types (after every identifier type),
    with their probability as score."""
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
