"""The identity policy on small hand-built graphs: hub caps, limits, unique namespaces, explicit links."""

import numpy as np
import pandas as pd
import pytest

from resolver.compute.cluster import connected_components
from resolver.ids import person_ids
from resolver.config import IdentityConfig
from resolver.graph.guards import identifier_degree, resolve_graph

IDENTITY = {
    "types": {
        "user_id": {"priority": 1, "limit": 1, "hub_cap": 3, "strong": True},
        "sf_contact_id": {"priority": 2, "limit": 1, "strong": True},
        "email": {"priority": 3, "limit": 2, "hub_cap": 5, "strong": True},
        "phone": {"priority": 5, "limit": 5, "hub_cap": 5, "strong": True},
        "device_id": {"priority": 6, "limit": 10, "hub_cap": 2},
        "ip": {"priority": 9, "evidence": False},
    }
}


class Graph:
    """A tiny graph builder: records r0.., identifiers by (type, value)."""

    def __init__(self, n_records: int):
        self.n_records = n_records
        self.nodes: list[tuple[str, str]] = []
        self.edges: list[dict] = []
        self.alias: dict[int, int] = {}

    def node(self, id_type: str, value: str) -> int:
        if (id_type, value) not in self.nodes:
            self.nodes.append((id_type, value))
        return self.n_records + self.nodes.index((id_type, value))

    def link(self, a, b, id_type=None, explicit=False, count=1):
        a = a if isinstance(a, int) else self.node(*a)
        b = b if isinstance(b, int) else self.node(*b)
        if id_type is None:
            id_type = self.nodes[max(a, b) - self.n_records][0]
        self.edges.append({"src": a, "dst": b, "id_type": id_type, "explicit": explicit, "count": count,
                           "first_seen": pd.Timestamp("2024-01-01"), "rule": "x"})

    def resolve(self, **identity_overrides):
        identity = IdentityConfig.model_validate({**IDENTITY, **identity_overrides})
        names = list(identity.types)
        nodes = pd.DataFrame(self.nodes, columns=["id_type", "value"])
        nodes["type"] = [names.index(t) for t in nodes["id_type"]]
        nodes["alias"] = [self.alias.get(i, i) for i in range(len(nodes))]
        edges = pd.DataFrame(self.edges)
        edges["type"] = [names.index(t) for t in edges["id_type"]]
        return resolve_graph(self.n_records, nodes, edges, identity)


def same(result, a: int, b: int) -> bool:
    return result.labels[a] == result.labels[b]


def test_records_sharing_an_email_merge():
    g = Graph(2)
    g.link(0, ("email", "a@x.com"))
    g.link(1, ("email", "a@x.com"))
    result = g.resolve()
    assert same(result, 0, 1)
    assert set(result.edge_status) == {"linked"}


def test_unique_namespace_cuts_the_weaker_edge_instead_of_merging():
    # Two contacts (distinct contact ids) share a family phone: they must stay two people.
    g = Graph(2)
    g.link(0, ("sf_contact_id", "A"))
    g.link(1, ("sf_contact_id", "B"))
    g.link(0, ("phone", "+14155550101"))
    g.link(1, ("phone", "+14155550101"))
    result = g.resolve()
    assert not same(result, 0, 1)
    assert (result.edge_status == "cut").sum() == 1
    cut = result.actions[result.actions["action"] == "limit_cut"]
    assert len(cut) == 1 and "sf_contact_id" in cut["reason"].iloc[0]


def test_strongest_evidence_is_kept_when_a_limit_cuts():
    # Record 0 and 1 share a user id (priority 1); record 1 and 2 share a device (priority 6);
    # record 2 has another user id, so one link must go: the device link, the weaker one.
    g = Graph(3)
    g.link(0, ("user_id", "u1"))
    g.link(1, ("user_id", "u1"))
    g.link(1, ("device_id", "d1"))
    g.link(2, ("device_id", "d1"))
    g.link(2, ("user_id", "u2"))
    result = g.resolve()
    assert same(result, 0, 1)
    assert not same(result, 1, 2)


def test_explicit_links_are_never_cut_and_aliases_count_once():
    # A merged Salesforce contact: record 0 holds id A, merged into B (an explicit, same-type link).
    g = Graph(2)
    a, b = g.node("sf_contact_id", "A"), g.node("sf_contact_id", "B")
    g.alias[a - 2] = b - 2
    g.link(0, a)
    g.link(0, b, explicit=True)
    g.link(1, b)
    result = g.resolve()
    assert same(result, 0, 1)
    assert "cut" not in set(result.edge_status)


def test_hub_cap_stops_a_kiosk_device_from_joining_everyone():
    g = Graph(4)
    for r in range(4):
        g.link(r, ("user_id", f"u{r}"))
        g.link(("device_id", "kiosk"), ("user_id", f"u{r}"), id_type="device_id")
    result = g.resolve()
    kiosk = g.node("device_id", "kiosk") - 4
    assert result.hub[kiosk]
    assert result.degree[kiosk] == 4
    assert len({result.labels[r] for r in range(4)}) == 4
    hub = result.actions[result.actions["action"] == "hub_capped"]
    assert hub["value"].tolist() == ["kiosk"]


def test_guards_off_lets_the_hub_merge_everyone():
    g = Graph(3)
    for r in range(3):
        g.link(r, ("user_id", f"u{r}"))
        g.link(("device_id", "kiosk"), ("user_id", f"u{r}"), id_type="device_id")
    result = g.resolve(guards=False)
    assert len({result.labels[r] for r in range(3)}) == 1


def test_non_evidence_identifiers_never_link():
    g = Graph(2)
    g.link(0, ("ip", "10.0.0.1"))
    g.link(1, ("ip", "10.0.0.1"))
    result = g.resolve()
    assert not same(result, 0, 1)
    assert set(result.edge_status) == {"observed"}


def test_limit_above_one_allows_that_many_values():
    g = Graph(3)
    for r, email in enumerate(["a@x", "b@x", "c@x"]):
        g.link(r, ("email", email))
        g.link(r, ("phone", "+1"))
    result = g.resolve()  # email limit 2: the third email's phone edge is cut
    assert len({result.labels[r] for r in range(3)}) == 2


def test_identifier_degree_counts_records_and_strong_identifiers_of_other_types():
    node_type = np.array([0, 1, 2])  # email, phone, device (not strong)
    strong = np.array([True, True, False])
    # records 0,1 ; id nodes 2 (email), 3 (phone), 4 (device)
    src = np.array([0, 1, 2, 4])
    dst = np.array([3, 3, 3, 3])
    degree = identifier_degree(2, node_type, strong, src, dst)
    assert degree.tolist() == [1, 3, 1]  # the phone: 2 records + 1 email; the device doesn't count


def test_connected_components_and_person_ids_are_order_free():
    labels = connected_components(5, np.array([0, 3]), np.array([1, 4]))
    assert labels[0] == labels[1] and labels[3] == labels[4] and labels[2] not in (labels[0], labels[3])
    keys = np.array([50, 10, 7, 99, 98], dtype=np.uint64)
    ids = person_ids(labels, keys).to_numpy()
    assert ids[0] == ids[1] == "p000000000000000a"
    assert ids[3] == "p0000000000000062"
    perm = np.array([4, 2, 0, 3, 1])
    relabelled = connected_components(5, np.array([2, 3]), np.array([4, 0]))  # same graph, nodes permuted
    ids2 = person_ids(relabelled, keys[perm]).to_numpy()
    assert ids2.tolist() == ids[perm].tolist()


@pytest.mark.parametrize("n", [0, 1])
def test_connected_components_edge_cases(n):
    assert connected_components(n, np.array([], int), np.array([], int)).tolist() == list(range(n))


@pytest.mark.parametrize("seed", range(5))
def test_components_after_cuts_are_the_components_of_the_linked_edges(seed):
    """Random graphs full of limit conflicts: the labels must be the connected components of
    exactly the edges marked linked, and no person may break a unique namespace."""
    rng = np.random.default_rng(seed)
    g = Graph(300)
    for r in range(300):
        g.link(r, ("user_id", f"u{rng.integers(250)}"))
        g.link(r, ("email", f"e{rng.integers(200)}"))
        if rng.random() < 0.5:
            g.link(r, ("phone", f"p{rng.integers(100)}"))
    result = g.resolve()
    edges = pd.DataFrame(g.edges)
    linked = np.asarray(result.edge_status == "linked")
    expected = connected_components(300 + len(g.nodes), edges["src"].to_numpy()[linked], edges["dst"].to_numpy()[linked])
    same_partition = pd.crosstab(result.labels, expected)
    assert ((same_partition > 0).sum(axis=1) == 1).all() and ((same_partition > 0).sum(axis=0) == 1).all()
    users = [i for i, (t, _) in enumerate(g.nodes) if t == "user_id"]
    per_person = pd.Series(result.labels[300 + np.array(users)]).value_counts()
    assert per_person.max() == 1
