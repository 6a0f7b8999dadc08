"""Stage 2, identity graph: `resolve_graph` on a handful of literal nodes and edges.

Nodes are records 0..n_records-1, then identifier values (node n_records + i is row i of `nodes`).
The guards: a hub-capped value stops being evidence, a non-evidence type (IP) is only observed, and
an edge that would give a person more values of a type than its `limit` is cut, weakest first.
"""

import numpy as np
import pandas as pd

from resolver.config import IdentityConfig
from resolver.graph.guards import resolve_graph

IDENTITY = {"types": {
    "sf_contact_id": {"priority": 1, "limit": 1, "strong": True},
    "email": {"priority": 2, "limit": 2, "hub_cap": 5, "strong": True},
    "phone": {"priority": 3, "limit": 3, "strong": True},
    "device_id": {"priority": 4, "hub_cap": 2},
    "ip": {"priority": 9, "evidence": False},
}}
TYPE = {name: code for code, name in enumerate(IDENTITY["types"])}


def graph(n_records: int, values: list[tuple[str, str]], links: list[tuple[int, int, str]], **identity):
    """resolve_graph over `values` (id_type, value) and `links` (src node, dst node, edge type)."""
    nodes = pd.DataFrame({"type": [TYPE[t] for t, _ in values], "value": [v for _, v in values],
                          "alias": range(len(values))})
    edges = pd.DataFrame({"src": [a for a, _, _ in links], "dst": [b for _, b, _ in links],
                          "type": [TYPE[t] for _, _, t in links], "explicit": False, "count": 1,
                          "first_seen": pd.Timestamp("2024-01-01")})
    return resolve_graph(n_records, nodes, edges, IdentityConfig.model_validate({**IDENTITY, **identity}))


# records 0..3; identifier nodes 4..9
VALUES = [("email", "ann@acme.io"), ("device_id", "kiosk-7"), ("sf_contact_id", "003A"),
          ("sf_contact_id", "003B"), ("ip", "10.0.0.1"), ("phone", "+13127482291")]
LINKS = [
    (0, 4, "email"), (1, 4, "email"),  # r0 and r1 share an email
    (0, 5, "device_id"), (1, 5, "device_id"), (2, 5, "device_id"),  # a kiosk three records used
    (2, 8, "ip"), (3, 8, "ip"),  # an IP: observed, never evidence
    (0, 6, "sf_contact_id"), (3, 7, "sf_contact_id"),  # two different Contacts
    (0, 9, "phone"), (3, 9, "phone"),  # a family phone between the two Contacts
]


def test_guards_cap_the_hub_observe_the_ip_and_cut_the_phone():
    result = graph(4, VALUES, LINKS)
    assert list(result.edge_status) == ["linked", "linked", "hub", "hub", "hub", "observed", "observed",
                                        "linked", "linked", "linked", "cut"]
    # per identifier node: the records or strong identifiers of another type its evidence edges
    # reach (the IP's edges are only observed: 0)
    assert result.degree.tolist() == [2, 3, 1, 1, 0, 2]
    assert result.hub.tolist() == [False, True, False, False, False, False]
    labels = result.labels
    assert labels[0] == labels[1]  # the email
    assert labels[2] not in (labels[0], labels[3])  # only the kiosk and the IP reach r2
    assert labels[3] != labels[0]  # the phone edge of r3 was cut: one Contact per person
    assert labels[9] == labels[0]  # the phone stays with the first Contact (its edge came first)
    assert result.cut_type.tolist() == [-1] * 10 + [TYPE["sf_contact_id"]]


def test_guard_actions_name_the_value_and_the_rule():
    actions = graph(4, VALUES, LINKS).actions
    assert actions[["action", "id_type", "value", "count"]].values.tolist() == [
        ["hub_capped", "device_id", "kiosk-7", 3],
        ["limit_cut", "phone", "+13127482291", 1],
    ]
    assert actions["reason"][0] == "linked to 3 records or strong identifiers (cap 2); no longer evidence"
    assert "more than 1" in actions["reason"][1] and "sf_contact_id" in actions["reason"][1]


def test_without_guards_every_evidence_edge_links():
    result = graph(4, VALUES, LINKS, guards=False)
    assert "hub" not in set(result.edge_status) and "cut" not in set(result.edge_status)
    assert list(result.edge_status).count("observed") == 2  # the IP is still no evidence
    assert len(set(result.labels[:4].tolist())) == 1
    assert result.actions.empty


def test_a_type_limit_of_two_cuts_the_third_email():
    # three records with one email each, all sharing a phone: email limit 2 keeps two of them
    values = [("email", "a@acme.io"), ("email", "b@acme.io"), ("email", "c@acme.io"), ("phone", "+13127482291")]
    links = [(0, 3, "email"), (1, 4, "email"), (2, 5, "email"), (0, 6, "phone"), (1, 6, "phone"), (2, 6, "phone")]
    result = graph(3, values, links)
    assert list(result.edge_status) == ["linked"] * 5 + ["cut"]
    assert result.labels[0] == result.labels[1] != result.labels[2]
    assert result.actions[["action", "id_type", "value"]].values.tolist() == [["limit_cut", "phone", "+13127482291"]]


def test_probabilistic_links_stop_at_the_record_cap():
    # record-record links of type len(types), strongest score first; a person may hold 2 records
    nodes = pd.DataFrame({"type": np.zeros(0, np.int64), "value": pd.Series([], dtype="str"), "alias": np.zeros(0, np.int64)})
    edges = pd.DataFrame({"src": [0, 1], "dst": [1, 2], "type": len(TYPE), "explicit": False, "count": 1,
                          "first_seen": pd.Timestamp("2024-01-01"), "score": [0.99, 0.90]})
    identity = IdentityConfig.model_validate(IDENTITY)
    result = resolve_graph(3, nodes, edges, identity, probabilistic_limits={}, probabilistic_record_cap=2)
    assert list(result.edge_status) == ["linked", "cut"]
    assert result.labels[0] == result.labels[1] != result.labels[2]
    uncapped = resolve_graph(3, nodes, edges, identity, probabilistic_limits={})
    assert len(set(uncapped.labels.tolist())) == 1
