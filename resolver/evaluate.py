"""Quality against labels: pairwise and B-cubed precision/recall/F1, over- and under-merged persons.

All metrics come from the contingency table of (predicted cluster, true person) counts, so they
cost O(entities), never O(pairs).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class ClusterMetrics:
    entities: int
    predicted_clusters: int
    true_clusters: int
    pairwise_precision: float
    pairwise_recall: float
    pairwise_f1: float
    bcubed_precision: float
    bcubed_recall: float
    bcubed_f1: float
    overmerged_clusters: int  # predicted persons that hold more than one true person
    split_true_persons: int  # true persons spread over more than one predicted person

    def as_dict(self) -> dict:
        return asdict(self)


def _f1(precision: float, recall: float) -> float:
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def _pairs(counts: np.ndarray) -> int:
    counts = counts.astype(np.int64)
    return int((counts * (counts - 1) // 2).sum())


def _singletons_for_missing(predicted: pd.Series) -> pd.Series:
    """Unresolved entities (no predicted person) count as clusters of one."""
    predicted = predicted.astype(object)
    missing = predicted.isna().to_numpy()
    if missing.any():
        predicted = predicted.copy()
        predicted[missing] = [f"__unresolved_{i}" for i in range(int(missing.sum()))]
    return predicted


def cluster_metrics(predicted, truth) -> ClusterMetrics:
    """Compare a predicted clustering with the true one; both are labels aligned per entity."""
    predicted = _singletons_for_missing(pd.Series(predicted).reset_index(drop=True))
    truth = pd.Series(truth).reset_index(drop=True)
    if len(predicted) != len(truth):
        raise ValueError("predicted and true labels must have the same length")
    if truth.isna().any():
        raise ValueError("every entity needs a true label")
    pred_codes, _ = pd.factorize(predicted)
    true_codes, _ = pd.factorize(truth)
    cells = pd.DataFrame({"p": pred_codes, "t": true_codes}).value_counts().reset_index(name="n")
    pred_sizes = np.bincount(pred_codes)
    true_sizes = np.bincount(true_codes)
    n = len(truth)

    tp = _pairs(cells["n"].to_numpy())
    pred_pairs, true_pairs = _pairs(pred_sizes), _pairs(true_sizes)
    precision = tp / pred_pairs if pred_pairs else 1.0
    recall = tp / true_pairs if true_pairs else 1.0

    cell_n = cells["n"].to_numpy().astype(np.float64)
    b_precision = float((cell_n * cell_n / pred_sizes[cells["p"].to_numpy()]).sum() / n) if n else 1.0
    b_recall = float((cell_n * cell_n / true_sizes[cells["t"].to_numpy()]).sum() / n) if n else 1.0

    return ClusterMetrics(
        entities=n,
        predicted_clusters=len(pred_sizes),
        true_clusters=len(true_sizes),
        pairwise_precision=float(precision),
        pairwise_recall=float(recall),
        pairwise_f1=_f1(precision, recall),
        bcubed_precision=b_precision,
        bcubed_recall=b_recall,
        bcubed_f1=_f1(b_precision, b_recall),
        overmerged_clusters=int((cells.groupby("p").size() > 1).sum()),
        split_true_persons=int((cells.groupby("t").size() > 1).sum()),
    )


def _lookup_persons(identifier_map: pd.DataFrame, id_type: str, values: pd.Series, normalizer: str, region: str) -> pd.Series:
    """Person of each raw identifier value through the identifier map (NA when not linked)."""
    from resolver.normalize import hash_identifiers, normalize_identifier

    normalized, _ = normalize_identifier(normalizer, values.reset_index(drop=True), default_region=region)
    hashes = hash_identifiers(id_type, normalized)
    linked = identifier_map[(identifier_map["status"] == "linked") & (identifier_map["id_type"] == id_type)]
    lookup = pd.Series(linked["person_id"].to_numpy(), index=linked["hash"].to_numpy(np.uint64))
    lookup = lookup[~lookup.index.duplicated()]
    return pd.Series(lookup.reindex(hashes).to_numpy(), dtype=object)


def event_persons(identifier_map: pd.DataFrame, events: pd.DataFrame, config) -> pd.Series:
    """Predicted person per event: its user id's person, else its anonymous id's person."""
    region = config.run.default_region
    types = config.identity.types
    predicted = pd.Series([None] * len(events), dtype=object)
    for id_type, column in (("user_id", "user_id"), ("anonymous_id", "anonymous_id")):
        if id_type in types and column in events:
            found = _lookup_persons(identifier_map, id_type, events[column], types[id_type].normalizer, region)
            predicted = predicted.where(predicted.notna(), found)
    return predicted


def evaluate_outputs(out_dir, truth_dir, config) -> dict:
    """Metrics of a run's outputs against a truth folder written by `resolver generate`.

    Entities are CRM records (except those deleted at the source, which resolve to no one by
    design) and events; metrics are given for records, events, and both together.
    """
    from pathlib import Path

    out_dir, truth_dir = Path(out_dir), Path(truth_dir)
    identity = pd.read_parquet(out_dir / "identity_map.parquet", columns=["source", "record_key", "person_id", "status"])
    identifiers = pd.read_parquet(out_dir / "identifier_map.parquet", columns=["id_type", "hash", "person_id", "status"])
    truth_records = pd.read_parquet(truth_dir / "records.parquet").rename(columns={"person_id": "true_person"})
    records = truth_records.merge(identity, on=["source", "record_key"], how="left")
    records = records[records["status"].fillna("rejected") != "deleted"].reset_index(drop=True)

    result = {"records": cluster_metrics(records["person_id"], records["true_person"]).as_dict()}
    events_path = truth_dir / "events.parquet"
    if events_path.exists():
        events = pd.read_parquet(events_path).rename(columns={"person_id": "true_person"})
        events["person_id"] = event_persons(identifiers, events, config).to_numpy()
        result["events"] = cluster_metrics(events["person_id"], events["true_person"]).as_dict()
        both = pd.concat([records[["person_id", "true_person"]], events[["person_id", "true_person"]]], ignore_index=True)
        result["all"] = cluster_metrics(both["person_id"], both["true_person"]).as_dict()
    result["excluded_deleted_records"] = int(len(truth_records) - len(records))
    return result
