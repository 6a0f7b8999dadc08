"""The person tables from the resolved graph: the identity map (record -> person), the identifier
map (value -> person, with its status), the persons, and the policy actions with the person whose
data they concern.

Person ids are the smallest member key of each person, or with a state the previous run's ids
carried over (carry_ids). The tables are in record, node and person-id order.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from resolver.compute.backend import CPU, Backend
from resolver.ids import format_person_ids, record_member_keys, smallest_member_keys
from resolver.compute.frames import Aggregate, group_aggregate
from resolver.compute.grouping import Groups, sorted_unique
from resolver.config import IdentityConfig
from resolver.graph.guards import OBSERVED, PROBABILISTIC, GraphResult
from resolver.ingest.tables import ACTION_COLUMNS
from resolver.ingest.plan import concat_frames
from resolver.ingest.tables import IDENTIFIER_RULE, Vocabulary
from resolver.matching.match import MatchResult
from resolver.matching.score import DECISIONS
from resolver.state.store import CarriedIds, State, carry_ids


def person_tables(identity: IdentityConfig, vocab: Vocabulary, records: pd.DataFrame, nodes: pd.DataFrame,
                  edges: pd.DataFrame, result: GraphResult, deterministic: np.ndarray, match: MatchResult | None,
                  previous: State | None, run_id: str, now: pd.Timestamp | None, backend: Backend,
                  ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, CarriedIds | None, np.ndarray]:
    """Identity map, identifier map and persons from the resolved graph (and the carried ids
    when the run has a state), and per record the row of its person in persons (-1: none; what
    golden records group by, instead of matching the ids as text)."""
    n_records = len(records)
    labels = result.labels
    active = ~records["is_deleted"].to_numpy()
    evidence = np.array([identity.types[t].evidence for t in vocab.types], dtype=bool)
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
    identity_map["linked_by"] = _linked_by(records, edges, result.edge_status, identity, vocab)
    identity_map["deterministic_group"] = deterministic
    if match is not None:
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
    in_order = _person_order(is_person, label_keys)
    persons = _persons(labels, is_person, label_keys, records, nodes, linked, in_order, backend)
    row_of_label = np.full(len(is_person), -1, dtype=np.int64)
    row_of_label[in_order] = np.arange(len(in_order))
    return identity_map, identifier_map, persons, carried, row_of_label[labels[:n_records]]


def _person_order(is_person: np.ndarray, label_keys: np.ndarray) -> np.ndarray:
    """The persons' labels in person-id order (the rows of the persons table)."""
    chosen = np.flatnonzero(is_person)
    return chosen[np.argsort(label_keys[chosen], kind="stable")]


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



def _linked_by(records: pd.DataFrame, edges: pd.DataFrame, status: np.ndarray, identity: IdentityConfig,
               vocab: Vocabulary) -> pd.Categorical:
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
    priority = np.array([identity.types[t].priority for t in vocab.types], dtype=np.int64)
    priority = np.append(priority, priority.max(initial=0) + 1)  # probabilistic links rank last
    labels = np.array(list(vocab.rules) + list(vocab.types) + [PROBABILISTIC], dtype=object)
    label = np.where(is_rule, rule, len(vocab.rules) + id_type)
    best = Groups.of(record, tiebreak=np.where(is_rule, -1, priority[id_type]) * len(labels) + label)
    labels = np.append(labels, "singleton")
    code = np.full(n, len(labels) - 1, dtype=np.int64)
    code[best.keys] = best.first(label)
    # As pd.Categorical of the labels would be (the names used, sorted), from codes: no Python
    # string per record.
    used = np.flatnonzero(np.bincount(code, minlength=len(labels)))
    names, position_of_used = np.unique(labels[used].astype(str), return_inverse=True)
    position = np.zeros(len(labels), dtype=np.int64)
    position[used] = position_of_used.reshape(-1)
    return pd.Categorical.from_codes(position[code], categories=pd.Index(names))


def _match_probability(n_records: int, match: MatchResult, accepted_links: np.ndarray) -> np.ndarray:
    """Per record, the highest probability of an accepted probabilistic link it has (NaN: none)."""
    out = np.full(n_records, -np.inf)
    for ends in (match.left[accepted_links], match.right[accepted_links]):
        np.maximum.at(out, ends, match.probability[accepted_links])
    return np.where(np.isfinite(out), out, np.nan)


def _persons(
    labels: np.ndarray, is_person: np.ndarray, label_keys: np.ndarray, records: pd.DataFrame, nodes: pd.DataFrame,
    node_linked: np.ndarray, chosen: np.ndarray, backend: Backend = CPU,
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
    # the distinct (value, label) pairs, as np.unique(..., axis=1) gives them, by one integer key
    span = int(labels.max()) + 1
    key = sorted_unique((node[hit] - n_records).astype(np.int64) * span + labels[other[hit]].astype(np.int64))
    pairs = np.stack([key // span, key % span])
    single = np.bincount(pairs[0], minlength=len(out)) == 1
    mine = single[pairs[0]] & is_person[pairs[1]]
    out[pairs[0][mine]] = pairs[1][mine]
    return out


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


def policy_actions(ingest_actions: pd.DataFrame, flagged: pd.DataFrame, graph_actions: pd.DataFrame,
                   record_pid: pd.Series) -> pd.DataFrame:
    """The ingest jobs' actions (with the person whose data each concerns, action_persons) and then
    the graph's (of no one person)."""
    ingest_actions["person_id"] = action_persons(ingest_actions, flagged, record_pid)
    graph_actions = graph_actions.assign(person_id=pd.Series(pd.NA, index=graph_actions.index, dtype="str"))
    return concat_frames([ingest_actions, graph_actions], ACTION_COLUMNS + ["person_id"])
