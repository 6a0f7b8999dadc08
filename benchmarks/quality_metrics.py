"""Quality of a clustering (and of a tool's pairwise links) against labelled entities.

One function, ``quality_metrics``, used for every tool by benchmarks/quality.py. Inputs are keyed
by a record key that is unique over the task (``source:record key``):

- ``truth``: one row per record of the task: ``key``, ``entity``;
- ``clusters``: the tool's clustering: ``key``, ``cluster`` (any labels). A truth record the tool
  did not output is a singleton (its own cluster); keys that are not in the truth are ignored
  (counted in ``unknown_cluster_keys``);
- ``pairs`` (optional): the tool's pairwise links: ``key_l``, ``key_r`` and, with ``threshold``,
  ``probability`` (links are the pairs at or above it); ``groups`` (optional, ``key``, ``group``):
  records the tool joined before scoring any pair (resolver's deterministic identifier groups):
  every pair inside a group counts as a link too.

Metrics, all from the contingency table of (predicted cluster, true entity) record counts, so that
no pair is ever listed (a 1M-record cluster costs what a small one does):

- ``pairwise``: cluster-implied pairs: every pair of records inside one predicted cluster is a
  predicted match; TP = sum over cells C(n_ij, 2), predicted = sum over clusters C(a_i, 2), actual =
  sum over entities C(b_j, 2);
- ``cluster``: exact clusters: a predicted cluster counts when it holds exactly one true entity's
  records; precision over predicted clusters, recall over true entities (singletons included);
- ``bcubed``: per record, precision = share of its predicted cluster that is its entity, recall =
  share of its entity that is in its predicted cluster, averaged over records;
- ``over_merged``: predicted clusters holding records of more than one true entity (count, share
  of predicted clusters); ``split``: true entities spread over more than one predicted cluster
  (count, share of true entities); ``largest_cluster``;
- ``links`` (with ``pairs``): precision / recall / F1 of the distinct links between two distinct
  truth records, recall over every true pair.

An empty denominator gives 1.0 (no predicted pairs: precision 1.0; no true pairs: recall 1.0), as
resolver/outputs/evaluate.py does; F1 is 0.0 when precision + recall is 0.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def prf(tp: int, predicted: int, actual: int) -> dict:
    precision = tp / predicted if predicted else 1.0
    recall = tp / actual if actual else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": float(precision), "recall": float(recall), "f1": float(f1), "tp": int(tp),
            "predicted": int(predicted), "actual": int(actual)}


def pairs_in(sizes: np.ndarray) -> int:
    """Sum of C(n, 2) over sizes, in int64 arithmetic."""
    sizes = np.asarray(sizes, dtype=np.int64)
    return int((sizes * (sizes - 1) // 2).sum())


def _labels_for(keys: pd.Index, label_keys: pd.Series, labels: pd.Series) -> tuple[np.ndarray, int, int]:
    """Dense labels for every key of ``keys``; keys without a label (or with a null label) become
    singletons. Returns (labels, keys without a label, label rows whose key is unknown)."""
    n = len(keys)
    position = keys.get_indexer(pd.Series(label_keys).astype(str))
    known = position >= 0
    codes, _ = pd.factorize(pd.Series(labels).to_numpy()[known], use_na_sentinel=True)
    assigned = np.full(n, -1, np.int64)
    assigned[position[known]] = codes
    missing = assigned < 0
    assigned[missing] = codes.max(initial=-1) + 1 + np.arange(int(missing.sum()))
    dense, _ = pd.factorize(assigned)
    return dense.astype(np.int64), int(missing.sum()), int((~known).sum())


def _cells(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(label a, label b, records) for every non-empty intersection of an a-group and a b-group."""
    table = pd.DataFrame({"a": a, "b": b}).value_counts(sort=False).reset_index(name="k")
    return table["a"].to_numpy(), table["b"].to_numpy(), table["k"].to_numpy().astype(np.int64)


def quality_metrics(truth: pd.DataFrame, clusters: pd.DataFrame | None, pairs: pd.DataFrame | None = None,
                    threshold: float | None = None, groups: pd.DataFrame | None = None) -> dict:
    """Pairwise (cluster-implied), exact-cluster and B-cubed P/R/F1, over-merged / split clusters,
    the largest cluster, and the pairwise P/R/F1 of the links in ``pairs`` (see the module doc)."""
    keys = pd.Index(truth["key"].astype(str))
    if keys.has_duplicates:
        raise ValueError("truth keys must be unique")
    if truth["entity"].isna().any():
        raise ValueError("every truth record needs an entity")
    n = len(keys)
    entity, _ = pd.factorize(truth["entity"].to_numpy())
    entity = entity.astype(np.int64)
    true_sizes = np.bincount(entity) if n else np.zeros(0, np.int64)
    true_pairs = pairs_in(true_sizes)

    if clusters is None:
        clusters = pd.DataFrame({"key": pd.Series([], dtype=str), "cluster": pd.Series([], dtype=object)})
    cluster, missing, unknown = _labels_for(keys, clusters["key"], clusters["cluster"])
    pred_sizes = np.bincount(cluster) if n else np.zeros(0, np.int64)
    c, e, k = _cells(cluster, entity)

    b_precision = float((k * k / pred_sizes[c]).sum() / n) if n else 1.0
    b_recall = float((k * k / true_sizes[e]).sum() / n) if n else 1.0
    b_f1 = 2 * b_precision * b_recall / (b_precision + b_recall) if b_precision + b_recall else 0.0
    exact = int(((k == pred_sizes[c]) & (k == true_sizes[e])).sum())
    entities_per_cluster = np.bincount(c, minlength=len(pred_sizes))
    clusters_per_entity = np.bincount(e, minlength=len(true_sizes))
    over_merged = int((entities_per_cluster > 1).sum())
    split = int((clusters_per_entity > 1).sum())
    result = {
        "records": n,
        "true_entities": int(len(true_sizes)),
        "true_pairs": true_pairs,
        "predicted_clusters": int(len(pred_sizes)),
        "pairwise": prf(pairs_in(k), pairs_in(pred_sizes), true_pairs),
        "cluster": prf(exact, len(pred_sizes), len(true_sizes)),
        "bcubed": {"precision": b_precision, "recall": b_recall, "f1": float(b_f1)},
        "over_merged": {"clusters": over_merged, "share": over_merged / len(pred_sizes) if len(pred_sizes) else 0.0},
        "split": {"entities": split, "share": split / len(true_sizes) if len(true_sizes) else 0.0},
        "largest_cluster": int(pred_sizes.max(initial=0)),
        "records_missing_from_output": missing,
        "unknown_cluster_keys": unknown,
        "links": None,
    }
    if pairs is not None:
        result["links"] = link_metrics(keys, entity, pairs, threshold, groups)
    return result


def link_metrics(keys: pd.Index, entity: np.ndarray, pairs: pd.DataFrame, threshold: float | None,
                 groups: pd.DataFrame | None = None) -> dict:
    """P/R/F1 of distinct links between distinct known records (plus every pair inside a group)."""
    n = len(keys)
    true_pairs = pairs_in(np.bincount(entity)) if n else 0
    links = pairs if threshold is None else pairs[pairs["probability"] >= threshold]
    left = keys.get_indexer(links["key_l"].astype(str))
    right = keys.get_indexer(links["key_r"].astype(str))
    known = (left >= 0) & (right >= 0) & (left != right)
    lo = np.minimum(left[known], right[known]).astype(np.int64)
    hi = np.maximum(left[known], right[known]).astype(np.int64)
    edge = np.unique(lo * max(n, 1) + hi)
    lo, hi = edge // max(n, 1), edge % max(n, 1)
    tp, predicted = int((entity[lo] == entity[hi]).sum()), len(edge)
    if groups is not None and len(groups):
        group, _, _ = _labels_for(keys, groups["key"], groups["group"])
        cross = group[lo] != group[hi]  # a scored link inside a group is counted once, with the group
        _, _, k = _cells(group, entity)
        tp = pairs_in(k) + int((entity[lo[cross]] == entity[hi[cross]]).sum())
        predicted = pairs_in(np.bincount(group)) + int(cross.sum())
    out = prf(tp, predicted, true_pairs)
    out["unknown_keys"] = int((~((left >= 0) & (right >= 0))).sum())
    out["threshold"] = threshold
    return out
