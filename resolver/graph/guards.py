"""Deterministic identity graph with the guards CDPs use against over-merging.

Nodes are records (0..n_records-1) followed by identifier values. Edges say "record holds this
identifier", "these identifiers were seen together in an event" or "a source system says these are
the same" (explicit links: Salesforce merges, lead conversions, Segment alias). The policy:

1. Hub caps: an identifier value linked to more records or strong identifiers of other types than
   its type's `hub_cap` (a kiosk device, a carrier NAT IP, a family phone) stops being evidence.
2. Non-evidence types (e.g. IP) are kept as observations but never link anything.
3. Limits: a person holds at most `limit` distinct values of a type (`limit: 1` makes a unique
   namespace). Components that break a limit are rebuilt greedily, strongest evidence first
   (explicit links, then by type priority, then by how often the edge was seen); an edge that
   would break a limit is cut instead of merging, and reported.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from numba import njit

from resolver.compute.backend import CPU, Backend
from resolver.compute.cluster import connected_components, find_root
from resolver.compute.engine import LOCAL, Engine
from resolver.config import IdentityConfig
from resolver.ingest.tables import ACTION_COLUMNS

EDGE_STATES = ("linked", "hub", "observed", "cut")
PROBABILISTIC = "probabilistic"  # edge type of record-record links from probabilistic matching
LINKED, HUB, OBSERVED, CUT = range(len(EDGE_STATES))


@dataclass
class GraphResult:
    labels: np.ndarray  # component label per node (records first, then identifiers)
    edge_status: pd.Categorical  # per edge: one of EDGE_STATES
    hub: np.ndarray  # per identifier node: True when it was capped as a hub
    degree: np.ndarray  # per identifier node: records + strong identifiers of other types it links
    actions: pd.DataFrame  # ACTION_COLUMNS
    cut_type: np.ndarray | None = None  # per edge: code of the type whose limit cut it (-1 = not cut)


def _type_table(identity: IdentityConfig, type_names: list[str], probabilistic: bool = False) -> pd.DataFrame:
    """Per edge type code: priority, hub cap, strong, evidence. With `probabilistic`, one more
    row (code len(type_names)) ranks probabilistic links after every identifier."""
    rows = []
    for name in type_names:
        spec = identity.types[name]
        rows.append(
            {
                "priority": spec.priority,
                "hub_cap": spec.hub_cap if spec.hub_cap is not None else 0,
                "strong": spec.strong,
                "evidence": spec.evidence,
            }
        )
    index = list(type_names)
    if probabilistic:
        rows.append({"priority": max([r["priority"] for r in rows], default=0) + 1, "hub_cap": 0,
                     "strong": False, "evidence": True})
        index.append(PROBABILISTIC)
    # Explicit columns: a config may declare no identifier type at all (records linked only by matching).
    return pd.DataFrame(rows, index=index, columns=["priority", "hub_cap", "strong", "evidence"])


def identifier_degree(
    n_records: int, node_type: np.ndarray, strong_type: np.ndarray, src: np.ndarray, dst: np.ndarray
) -> np.ndarray:
    """Per identifier node: distinct neighbours that are records or strong identifiers of another type.

    `node_type` holds a type code per identifier node; `strong_type` says per type code whether
    that type counts. Edges are assumed distinct.
    """
    n_ids = len(node_type)
    a = np.concatenate([src, dst])
    b = np.concatenate([dst, src])
    is_id = a >= n_records
    a, b = a[is_id], b[is_id]
    b_is_record = b < n_records
    b_type = np.where(b_is_record, -1, node_type[np.maximum(b - n_records, 0)])
    counts = b_is_record | (strong_type[np.maximum(b_type, 0)] & (b_type != node_type[a - n_records]))
    return np.bincount(a[counts] - n_records, minlength=n_ids).astype(np.int64)


UNLIMITED = np.iinfo(np.int64).max


def limit_matrix(identity: IdentityConfig, type_names: list[str],
                 probabilistic_limits: dict[str, int] | None = None) -> np.ndarray:
    """limits[t, u]: most values of type u a group may hold when an edge of type t joins it.

    Row t is the global `limit` of every type, tightened by type t's `link_limits`. With
    `probabilistic_limits`, one more row for probabilistic links, tightened by those.
    """
    n = len(type_names)
    rows = n + (probabilistic_limits is not None)
    if not identity.guards:
        return np.full((rows, n), UNLIMITED, dtype=np.int64)
    base = np.array(
        [identity.types[u].limit or UNLIMITED for u in type_names], dtype=np.int64
    )
    limits = np.tile(base, (rows, 1))
    tightening = [identity.types[name].link_limits for name in type_names]
    if probabilistic_limits is not None:
        tightening.append(probabilistic_limits)
    for t, link_limits in enumerate(tightening):
        for other, cap in link_limits.items():
            u = type_names.index(other)
            limits[t, u] = min(limits[t, u], cap)
    return limits


def _first_of_each(values: np.ndarray) -> np.ndarray:
    """The position of each distinct value's first occurrence, in value order (np.unique's
    return_index), without sorting when the values are small non-negative integers."""
    if not len(values) or values.min() < 0 or values.max() > 4 * len(values):
        return np.unique(values, return_index=True)[1]
    first = np.full(int(values.max()) + 1, -1, dtype=np.int64)
    first[values[::-1]] = np.arange(len(values) - 1, -1, -1)  # the last write is the first occurrence
    return first[first >= 0]


def dense_ranks(labels: np.ndarray) -> np.ndarray:
    """Each label's rank among the distinct labels (np.unique's return_inverse), without sorting
    (labels are non-negative and below a few times their count)."""
    if not len(labels):
        return labels.astype(np.int64)
    present = np.zeros(int(labels.max()) + 1, dtype=bool)
    present[labels] = True
    return (np.cumsum(present) - 1)[labels].astype(np.int64)


def _limit_violations(
    labels: np.ndarray,
    node_type: np.ndarray,
    alias: np.ndarray,
    n_records: int,
    limits: np.ndarray,
    linking_edge_types: np.ndarray,
    linking_edge_labels: np.ndarray,
) -> np.ndarray:
    """Component labels where some type holds more distinct values than a limit allows.

    Global limits: more values of type u than its `limit`. Link limits: the component holds an
    edge of type t and more values of type u than limits[t, u].
    """
    n_types = limits.shape[1]
    if n_types == 0:  # no identifier type: nothing to limit
        return np.zeros(0, dtype=np.int64)
    tracked = (limits < UNLIMITED).any(axis=0)
    # Count alias groups, not values: one representative node per group.
    representative = np.zeros(len(node_type), dtype=bool)
    representative[_first_of_each(alias)] = True
    counted = tracked[node_type] & representative
    key = labels[n_records:][counted].astype(np.int64) * n_types + node_type[counted]
    count = np.bincount(key, minlength=0)  # keys are below (components x types): a count, not a sort
    held = np.flatnonzero(count)
    count = count[held]
    component, held_type = held // n_types, held % n_types
    loosest = limits.max(axis=0)
    # Masks over component labels, not np.unique/np.isin: the labels are small integers (no sort).
    n_components = int(labels.max(initial=-1)) + 1
    broken = np.zeros(n_components, dtype=bool)
    broken[component[count > loosest[held_type]]] = True
    for t in np.flatnonzero((limits < loosest[None, :]).any(axis=1)):
        with_t = np.zeros(n_components, dtype=bool)
        with_t[linking_edge_labels[linking_edge_types == t]] = True
        over = (count > limits[t, held_type]) & with_t[component]
        broken[component[over]] = True
    return np.flatnonzero(broken).astype(np.int64)


def _oversized(labels: np.ndarray, n_records: int, cap: int, with_probabilistic: np.ndarray) -> np.ndarray:
    """Components holding a probabilistic link and more records than the cap."""
    records = np.bincount(labels[:n_records], minlength=int(labels.max(initial=-1)) + 1)
    over = np.flatnonzero(records > cap)
    return np.intersect1d(over, with_probabilistic)


@njit(cache=True)
def _first_broken_type(
    head_a: int, head_b: int, nxt: np.ndarray, value_type: np.ndarray, value_alias: np.ndarray, row: np.ndarray
) -> int:
    """The smallest type whose distinct values in the union of two groups exceed `row`, or -1."""
    n_types = len(row)
    counts = np.zeros(n_types, dtype=np.int64)
    size = 0
    for head in (head_a, head_b):
        entry = head
        while entry != -1:
            size += 1
            entry = nxt[entry]
    seen_type = np.empty(size, dtype=np.int64)
    seen_alias = np.empty(size, dtype=np.int64)
    filled = 0
    for head in (head_a, head_b):
        entry = head
        while entry != -1:
            t, a = value_type[entry], value_alias[entry]
            duplicate = False
            for j in range(filled):
                if seen_type[j] == t and seen_alias[j] == a:
                    duplicate = True
                    break
            if not duplicate:
                seen_type[filled] = t
                seen_alias[filled] = a
                filled += 1
                counts[t] += 1
            entry = nxt[entry]
    for t in range(n_types):
        if counts[t] > row[t]:
            return t
    return -1


@njit(cache=True)
def _greedy_union(
    n_local: int,
    ends_a: np.ndarray,
    ends_b: np.ndarray,
    edge_type: np.ndarray,
    explicit: np.ndarray,
    value_type: np.ndarray,
    value_alias: np.ndarray,
    limits: np.ndarray,
    is_record: np.ndarray,
    capped_type: int,
    record_cap: int,
) -> np.ndarray:
    """Union-find over edges in the given order, refusing unions that break a limit.

    Each group keeps a linked list of the limited values it holds (node i's own value, if any,
    is entry i). An edge of `capped_type` also may not make a group of more than `record_cap`
    records (reported as type len(limits[0])). Returns, per edge, the type whose limit it would
    break (-1 when it was merged or was already inside one group), and per node the root of its
    final group.
    """
    parent = np.arange(n_local)
    size = np.ones(n_local, dtype=np.int64)
    records = is_record.astype(np.int64)
    head = np.where(value_type >= 0, np.arange(n_local), -1)
    tail = head.copy()
    nxt = np.full(n_local, -1, dtype=np.int64)
    broken = np.full(len(ends_a), -1, dtype=np.int64)
    for e in range(len(ends_a)):
        ra, rb = find_root(parent, ends_a[e]), find_root(parent, ends_b[e])
        if ra == rb:
            continue
        t = _first_broken_type(head[ra], head[rb], nxt, value_type, value_alias, limits[edge_type[e]])
        if t < 0 and edge_type[e] == capped_type and records[ra] + records[rb] > record_cap:
            t = limits.shape[1]
        if t >= 0 and not explicit[e]:
            broken[e] = t
            continue
        if size[ra] < size[rb]:
            ra, rb = rb, ra
        parent[rb] = ra
        size[ra] += size[rb]
        records[ra] += records[rb]
        if head[rb] != -1:
            if head[ra] == -1:
                head[ra] = head[rb]
            else:
                nxt[tail[ra]] = head[rb]
            tail[ra] = tail[rb]
    for node in range(n_local):
        parent[node] = find_root(parent, node)
    return broken, parent


def _greedy_rebuild(
    edge_index: np.ndarray,
    src: np.ndarray,
    dst: np.ndarray,
    explicit: np.ndarray,
    edge_type: np.ndarray,
    n_records: int,
    node_type: np.ndarray,
    alias: np.ndarray,
    limits: np.ndarray,
    capped_type: int = -1,
    record_cap: int = UNLIMITED,
) -> tuple[list[tuple[int, int]], np.ndarray, np.ndarray]:
    """Union the edges in the given (already sorted) order. Returns (edge, type) for the edges
    cut by a limit, and the groups the rest formed: the nodes touched and each one's group root.

    Runs only over components that break a limit, which are few and small next to the whole graph.
    """
    ends = np.concatenate([src[edge_index], dst[edge_index]])
    # np.unique(ends, return_inverse=True) by a mask over node numbers: no sort.
    touched = np.zeros(int(ends.max(initial=-1)) + 1, dtype=bool)
    touched[ends] = True
    local_nodes = np.flatnonzero(touched)
    local = (np.cumsum(touched) - 1)[ends]
    m = len(edge_index)
    tracked = (limits < UNLIMITED).any(axis=0)
    is_identifier = local_nodes >= n_records
    value_type = np.full(len(local_nodes), -1, dtype=np.int64)
    value_alias = np.full(len(local_nodes), -1, dtype=np.int64)
    ids = np.flatnonzero(is_identifier)  # none when the sources map no identifier (records linked by matching)
    if len(ids):
        ident = local_nodes[ids] - n_records
        types = node_type[ident].astype(np.int64)
        limited = tracked[types]
        value_type[ids] = np.where(limited, types, -1)
        value_alias[ids] = np.where(limited, alias[ident], -1)
    broken, root = _greedy_union(
        len(local_nodes), local[:m].astype(np.int64), local[m:].astype(np.int64), edge_type[edge_index].astype(np.int64),
        explicit[edge_index], value_type, value_alias, limits, ~is_identifier, capped_type, record_cap,
    )
    cut = np.flatnonzero(broken >= 0)
    return list(zip(edge_index[cut].tolist(), broken[cut].tolist())), local_nodes, root


def resolve_graph(
    n_records: int,
    nodes: pd.DataFrame,
    edges: pd.DataFrame,
    identity: IdentityConfig,
    probabilistic_limits: dict[str, int] | None = None,
    probabilistic_record_cap: int | None = None,
    backend: Backend = CPU,
    engine: Engine = LOCAL,
) -> GraphResult:
    """Apply the identity policy to the graph and return its components.

    nodes: one row per identifier node, in node order: type (code: position in identity.types),
    value, alias (int; equal for values that an explicit same-type link declared to be one, e.g. a
    merged Salesforce id and its master).
    edges: src, dst (node numbers), type (code of the type whose priority ranks the edge),
    explicit (bool), count (how often seen), first_seen; optionally score (higher first among
    edges of equal priority: the match probability of a probabilistic link).
    Probabilistic links are record-record edges of type code len(identity.types); they need
    `probabilistic_limits` (extra link limits for them; {} for none) and rank after every
    identifier, strongest probability first; with `probabilistic_record_cap`, a probabilistic
    link may not make a person of more records than that (no chaining into giant clusters).
    """
    type_names = list(identity.types)
    types = _type_table(identity, type_names, probabilistic=probabilistic_limits is not None)
    node_type = nodes["type"].to_numpy(np.int64)
    edge_type = edges["type"].to_numpy(np.int64)
    src = edges["src"].to_numpy(np.int64)
    dst = edges["dst"].to_numpy(np.int64)
    explicit = edges["explicit"].to_numpy(bool)
    alias = nodes["alias"].to_numpy(np.int64)
    n_nodes = n_records + len(nodes)

    evidence = types["evidence"].to_numpy(bool)
    node_is_evidence = np.concatenate([np.ones(n_records, bool), evidence[node_type]])
    status = np.where(node_is_evidence[src] & node_is_evidence[dst], LINKED, OBSERVED).astype(np.int8)

    linking = status == LINKED
    degree = identifier_degree(
        n_records, node_type, types["strong"].to_numpy(bool), src[linking], dst[linking]
    )
    caps = types["hub_cap"].to_numpy(np.int64)[node_type]
    hub = (caps > 0) & (degree > caps) & identity.guards
    node_is_hub = np.concatenate([np.zeros(n_records, bool), hub])
    status[linking & (node_is_hub[src] | node_is_hub[dst])] = HUB

    actions = [_hub_actions(nodes, type_names, degree, caps, hub)]
    linking = status == LINKED
    labels = connected_components(n_nodes, src[linking], dst[linking], backend, engine)

    limits = limit_matrix(identity, type_names, probabilistic_limits)
    score = edges["score"].to_numpy(np.float64) if "score" in edges else np.zeros(len(edges))
    cut_type = np.full(len(edges), -1, dtype=np.int64)
    broken = _limit_violations(
        labels, node_type, alias, n_records, limits, edge_type[linking], labels[src[linking]]
    )
    prob_type = len(type_names)
    record_cap = probabilistic_record_cap if (probabilistic_record_cap and identity.guards) else UNLIMITED
    if record_cap < UNLIMITED:
        broken = np.union1d(broken, _oversized(labels, n_records, record_cap, labels[src[linking & (edge_type == prob_type)]]))
    if len(broken):
        in_broken = np.zeros(labels.max() + 1, dtype=bool)
        in_broken[broken] = True
        candidates = np.flatnonzero(linking & in_broken[labels[src]])
        order = np.lexsort(
            (
                dst[candidates],
                src[candidates],
                edges["first_seen"].to_numpy("datetime64[ns]")[candidates].astype(np.int64),
                -edges["count"].to_numpy(np.int64)[candidates],
                -score[candidates],
                types["priority"].to_numpy(np.int64)[edge_type[candidates]],
                ~explicit[candidates],
            )
        )
        cuts, rebuilt_nodes, rebuilt_root = _greedy_rebuild(
            candidates[order], src, dst, explicit, edge_type, n_records, node_type, alias, limits, prob_type, record_cap
        )
        if cuts:
            cut_edges = np.array([e for e, _ in cuts], dtype=np.int64)
            status[cut_edges] = CUT
            cut_type[cut_edges] = [t for _, t in cuts]
            actions.append(_cut_actions(nodes, edges, edge_type, cuts, list(types.index), limits, n_records))
            # The rebuilt components are exactly the groups the greedy union formed.
            labels = labels.copy()
            labels[rebuilt_nodes] = labels.max() + 1 + rebuilt_root
            labels = dense_ranks(labels)

    return GraphResult(
        labels=labels,
        edge_status=pd.Categorical.from_codes(status, categories=EDGE_STATES),
        hub=hub,
        degree=degree,
        actions=pd.concat(actions, ignore_index=True) if actions else empty_actions(),
        cut_type=cut_type,
    )


def empty_actions() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="int64" if c == "count" else "str") for c in ACTION_COLUMNS})


def _hub_actions(nodes: pd.DataFrame, type_names: list[str], degree: np.ndarray, caps: np.ndarray, hub: np.ndarray) -> pd.DataFrame:
    if not hub.any():
        return empty_actions()
    picked = nodes[hub]
    return pd.DataFrame(
        {
            "action": "hub_capped",
            "source": pd.NA,
            "id_type": np.asarray(type_names, dtype=object)[picked["type"].to_numpy()],
            "value": picked["value"].to_numpy(),
            "reason": [
                f"linked to {d} records or strong identifiers (cap {c}); no longer evidence"
                for d, c in zip(degree[hub].tolist(), caps[hub].tolist())
            ],
            "count": degree[hub],
        }
    )


def _cut_actions(
    nodes: pd.DataFrame,
    edges: pd.DataFrame,
    edge_type: np.ndarray,
    cuts: list[tuple[int, int]],
    type_names: list[str],
    limits: np.ndarray,
    n_records: int,
) -> pd.DataFrame:
    cut = np.array([e for e, _ in cuts], dtype=np.int64)
    broken = np.array([t for _, t in cuts], dtype=np.int64)
    names = np.asarray(type_names, dtype=object)
    # Show the identifier end of each cut edge (records come first in node numbering); a
    # probabilistic link joins two records and has no identifier value to show.
    shown = np.maximum(edges["src"].to_numpy()[cut], edges["dst"].to_numpy()[cut]) - n_records
    has_value = shown >= 0
    shown = np.maximum(shown, 0)
    edge_names = names[edge_type[cut]]
    n_value_types = limits.shape[1]
    size_cap = broken == n_value_types  # the probabilistic record cap, not a value limit
    held_limit = np.zeros(len(cut), dtype=np.int64)
    by_value = ~size_cap  # (none when the sources map no identifier type)
    held_limit[by_value] = limits[edge_type[cut][by_value], broken[by_value]]
    held_limit = held_limit.tolist()
    reason = [
        f"a {edge} link would make a person of more than the allowed records; link cut" if capped
        else f"a {edge} link would give one person more than {limit} {names[held]} value(s); link cut"
        for edge, limit, held, capped in zip(edge_names, held_limit, broken, size_cap)
    ]
    return pd.DataFrame(
        {
            "action": "limit_cut",
            "source": pd.NA,
            # Only the shown rows are converted (not every node's value to a Python object).
            "id_type": np.where(has_value, names[nodes["type"].to_numpy()[shown]], edge_names) if len(nodes)
            else edge_names,
            "value": np.where(has_value, nodes["value"].take(shown).to_numpy(dtype=object), None) if len(nodes)
            else None,
            "reason": reason,
            "count": edges["count"].to_numpy()[cut],
        },
        columns=ACTION_COLUMNS,
    )
