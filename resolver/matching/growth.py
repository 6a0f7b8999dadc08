"""How a blocking rule's pairs grow with the records: the exponent `resolver plan` warns about.

A key whose values are shared by a fixed share of the population (first name + last name + city:
the names repeat, whatever the size of the file) makes blocks that grow with the records, so its
pairs grow with their square; a key that names one person (an email, a birth date with a surname)
makes pairs that grow with the records. The exponent is the log-log slope of the pairs the rule
makes in nested random shares of the *people* (a quarter, a half, all of them): about 1 is flat
pairs per record, about 2 is a rule that will swamp a run ten times the size.

A share of the records would not do: a pair survives a record sample of share s with chance s^2,
whatever the key, so every rule would look quadratic. A smaller population keeps each person's
records together; the people are not known before matching, so the records an identifier joins
(the deterministic persons) stand in for them.
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

SHARES = (0.25, 0.5, 1.0)
MIN_PAIRS = 50  # fewer pairs in the smallest share say nothing about a slope
GROWTH_WARNING = 1.3  # `resolver plan` warns above this: 10x the records make over 20x the pairs
GROWTH_LIMIT = 1.5  # `resolver init` proposes no rule above this: its blocks grow with the population


def identifier_people(record: np.ndarray, value: np.ndarray, n_records: int) -> np.ndarray:
    """A person label per record: the records its identifier values join (record[i] holds
    value[i]), directly or in a chain: the deterministic persons, without the run's guards. A
    record without identifiers is a person of its own."""
    codes = np.unique(np.asarray(value), return_inverse=True)[1].astype(np.int64).ravel()
    nodes = n_records + (int(codes.max()) + 1 if len(codes) else 0)
    graph = coo_matrix((np.ones(len(codes), dtype=np.int8), (np.asarray(record, dtype=np.int64), codes + n_records)),
                       shape=(nodes, nodes))
    return connected_components(graph, directed=False)[1][:n_records]


def pair_growth(keys: np.ndarray, people: np.ndarray, seed: int = 0) -> float | None:
    """The log-log slope of pairs against records for one rule's keys (uint64 per record, 0 = the
    record has no key), over nested random shares of the `people` (a label per record); None when
    the rule makes too few pairs to tell."""
    labels, person = np.unique(people, return_inverse=True)
    if len(labels) == len(people):  # no identifier joins two records: a share of people is one of records
        return None
    rank = np.random.default_rng(seed).random(len(labels))[person]  # a person is in share s when rank < s
    sizes, pairs = [], []
    for share in SHARES:
        taken = rank < share
        sub = keys[taken]
        counts = np.unique(sub[sub != 0], return_counts=True)[1].astype(np.int64)
        sizes.append(int(taken.sum()))
        pairs.append(int((counts * (counts - 1) // 2).sum()))
    if pairs[0] < MIN_PAIRS or min(sizes) < 2:
        return None
    return float(np.polyfit(np.log(sizes), np.log(pairs), 1)[0])


def growth_warning(rule: str, exponent: float | None) -> str | None:
    """The plan's warning for a rule whose pairs grow faster than the records."""
    if exponent is None or exponent <= GROWTH_WARNING:
        return None
    return (f"blocking rule {rule!r}: its pairs grow as records^{exponent:.2f} (measured on a quarter, a half and "
            f"all of the people): 10x the records would make about {10 ** exponent:,.0f}x the pairs. Add a key "
            "that tells people apart (a birth date, a postcode, an id), or give the rule refine keys")
