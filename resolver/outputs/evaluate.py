"""Quality against labels: pairwise and B-cubed precision/recall/F1, over- and under-merged persons.

All metrics come from the contingency table of (predicted cluster, true person) counts, so they
cost O(entities), never O(pairs).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from resolver.config import ConfigError
from resolver.normalize import hash_identifiers, normalize_identifier


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
    # Cluster level: a predicted cluster counts only when it equals a true cluster exactly.
    cluster_precision: float
    cluster_recall: float
    cluster_f1: float
    largest_cluster: int

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

    exact = cells["n"].to_numpy()
    exact = (exact == pred_sizes[cells["p"].to_numpy()]) & (exact == true_sizes[cells["t"].to_numpy()])
    c_precision = float(exact.sum() / len(pred_sizes)) if len(pred_sizes) else 1.0
    c_recall = float(exact.sum() / len(true_sizes)) if len(true_sizes) else 1.0
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
        cluster_precision=c_precision,
        cluster_recall=c_recall,
        cluster_f1=_f1(c_precision, c_recall),
        largest_cluster=int(pred_sizes.max(initial=0)),
    )


def _lookup_persons(identifier_map: pd.DataFrame, id_type: str, values: pd.Series, normalizer: str, region: str) -> pd.Series:
    """Person of each raw identifier value through the identifier map (NA when not linked)."""
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


TRUTH_COLUMNS = ("source", "record_key", "person_id")
TRUTH_FORMAT = ("a truth folder (as `resolver generate` writes: records.parquet, and events.parquet for events), "
                "or one .parquet or .csv file of records with columns source (a source name of the config), "
                "record_key (the record's key value) and person_id (any label; equal labels: one person)")


def read_truth_records(path) -> pd.DataFrame:
    """Truth records (source and record_key as strings, person_id as given) from TRUTH_FORMAT; a
    ConfigError naming the file and what is wrong otherwise."""
    from pathlib import Path

    path = Path(path)
    file = path / "records.parquet" if path.is_dir() else path
    if not file.exists():
        raise ConfigError(f"{file}: no truth records; --truth takes {TRUTH_FORMAT}")
    try:
        if file.suffix.lower() == ".csv":
            truth = pd.read_csv(file, dtype=str, keep_default_na=False)
        elif file.suffix.lower() == ".parquet":
            truth = pd.read_parquet(file)
        else:
            raise ConfigError(f"{file}: truth records must be a .parquet or .csv file; --truth takes {TRUTH_FORMAT}")
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"{file}: cannot read truth records: {exc}") from exc
    missing = [c for c in TRUTH_COLUMNS if c not in truth.columns]
    if missing:
        raise ConfigError(f"{file}: truth records lack column(s) {missing} (found {list(truth.columns)[:8]}); "
                          f"--truth takes {TRUTH_FORMAT}")
    return truth.astype({"source": str, "record_key": str})  # person_id as given: events' labels match it


def evaluate_outputs(out_dir, truth_dir, config) -> dict:
    """Metrics of a run's outputs against a truth folder written by `resolver generate`.

    Entities are CRM records (except those deleted at the source, which resolve to no one by
    design) and events; metrics are given for records, events, and both together.
    """
    from pathlib import Path

    out_dir, truth_dir = Path(out_dir), Path(truth_dir)
    if not (out_dir / "identity_map.parquet").exists():
        raise ConfigError(f"{out_dir}: no run outputs to evaluate (identity_map.parquet is missing); run first, "
                          "or name the outputs with --out")
    truth_records = read_truth_records(truth_dir).rename(columns={"person_id": "true_person"})
    folder = truth_dir.is_dir()  # events and visitors are a truth folder's only
    identity = pd.read_parquet(out_dir / "identity_map.parquet", columns=["source", "record_key", "person_id", "status"])
    identifiers = pd.read_parquet(out_dir / "identifier_map.parquet", columns=["id_type", "hash", "person_id", "status"])
    records = truth_records.merge(identity, on=["source", "record_key"], how="left")
    records = records[records["status"].fillna("rejected") != "deleted"].reset_index(drop=True)

    result = {"records": cluster_metrics(records["person_id"], records["true_person"]).as_dict()}
    events_path = truth_dir / "events.parquet"
    if folder and events_path.exists():
        events = pd.read_parquet(events_path).rename(columns={"person_id": "true_person"})
        events["person_id"] = event_persons(identifiers, events, config).to_numpy()
        result["events"] = cluster_metrics(events["person_id"], events["true_person"]).as_dict()
        both = pd.concat([records[["person_id", "true_person"]], events[["person_id", "true_person"]]], ignore_index=True)
        result["all"] = cluster_metrics(both["person_id"], both["true_person"]).as_dict()
    result["excluded_deleted_records"] = int(len(truth_records) - len(records))
    if (out_dir / "scored_pairs.parquet").exists():
        result["matching"] = matching_metrics(out_dir, truth_records)
    if folder and (out_dir / "anonymous_map.parquet").exists():
        result["stitching"] = stitching_metrics(out_dir, truth_dir, truth_records)
    return result


def _anonymous_truth(truth_dir) -> pd.Series:
    """Anonymous id (lower case) -> its true person (NA: nobody's): truth/visitors.parquet where the
    generator wrote one, and for the other ids the person most of their events belong to
    (truth/events.parquet)."""
    parts = []
    visitors = truth_dir / "visitors.parquet"
    if visitors.exists():
        frame = pd.read_parquet(visitors, columns=["anonymous_id", "person_id"])
        parts.append(frame.assign(anonymous_id=frame["anonymous_id"].astype("str").str.lower()))
    events_path = truth_dir / "events.parquet"
    if events_path.exists():
        events = pd.read_parquet(events_path, columns=["anonymous_id", "person_id"]).dropna(subset=["anonymous_id"])
        counts = events.groupby(["anonymous_id", "person_id"]).size().reset_index(name="n")
        counts = counts.sort_values(["anonymous_id", "n", "person_id"], ascending=[True, False, True], kind="stable")
        counts = counts.drop_duplicates("anonymous_id")[["anonymous_id", "person_id"]]
        parts.append(counts.assign(anonymous_id=counts["anonymous_id"].astype("str").str.lower()))
    if not parts:
        return pd.Series(dtype="float64")
    truth = pd.concat(parts, ignore_index=True).drop_duplicates("anonymous_id")
    return truth.set_index("anonymous_id")["person_id"]


def stitching_metrics(out_dir, truth_dir, truth_records: pd.DataFrame) -> dict:
    """Anonymous-visitor stitching against the truth: precision of the deterministic and of the
    probabilistic stitches, recall of the probabilistic ones among the ids left to them whose true
    person the run knows, and precision / recall of the best candidate at thresholds.

    A run's person stands for the true person most of its records belong to."""
    from pathlib import Path

    out_dir, truth_dir = Path(out_dir), Path(truth_dir)
    stitched = pd.read_parquet(out_dir / "anonymous_map.parquet")
    identity = pd.read_parquet(out_dir / "identity_map.parquet", columns=["source", "record_key", "person_id"])
    holders = identity.merge(truth_records[["source", "record_key", "true_person"]], on=["source", "record_key"])
    counts = holders.groupby(["person_id", "true_person"]).size().reset_index(name="n")
    counts = counts.sort_values(["person_id", "n", "true_person"], ascending=[True, False, True], kind="stable")
    stands_for = counts.drop_duplicates("person_id").set_index("person_id")["true_person"]
    truth = _anonymous_truth(truth_dir)
    known_id = stitched["anonymous_id"].astype("str").str.lower().isin(truth.index).to_numpy()
    true_person = stitched["anonymous_id"].astype("str").str.lower().map(truth)
    predicted = stitched["stitched_person_id"].map(stands_for)
    candidate = stitched["candidate_person_id"].map(stands_for)
    method = stitched["method"].astype("str")
    # A stitch is right when it names the id's person; an id of nobody (a stranger) stitched to
    # anyone is wrong. Ids the truth does not know are left out.
    correct = (predicted == true_person).to_numpy()
    left = method.isin(["probabilistic", "review", "anonymous"]).to_numpy() & known_id
    reachable = left & true_person.isin(set(stands_for)).to_numpy()
    out = {"anonymous_ids": len(stitched), "with_truth": int(known_id.sum()),
           "strangers_stitched": int(((method == "probabilistic").to_numpy() & known_id & true_person.isna().to_numpy()).sum())}
    for kind in ("deterministic", "probabilistic"):
        mine = (method == kind).to_numpy() & known_id
        out[f"{kind}_stitched"] = int(mine.sum())
        out[f"{kind}_precision"] = float(correct[mine].mean()) if mine.any() else 1.0
    probabilistic = (method == "probabilistic").to_numpy()
    out["probabilistic_recall"] = float((correct & probabilistic).sum() / reachable.sum()) if reachable.any() else 1.0
    out["left_to_probabilistic"] = int(left.sum())
    out["reachable"] = int(reachable.sum())
    probability = stitched["probability"].fillna(0.0).to_numpy()
    good = (candidate == true_person).to_numpy()
    curve = []
    for threshold in THRESHOLDS:
        taken = left & (probability >= threshold) & stitched["candidate_person_id"].notna().to_numpy()
        hits = int((taken & good).sum())
        curve.append({"threshold": threshold, "stitched": int(taken.sum()),
                      "precision": hits / int(taken.sum()) if taken.any() else 1.0,
                      "recall": hits / int(reachable.sum()) if reachable.any() else 1.0})
    out["by_threshold"] = curve
    return out


THRESHOLDS = (0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 0.99)


def true_pairs(record_ids: np.ndarray, persons: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every pair (lo, hi) of records with the same true person (O(true pairs))."""
    frame = pd.DataFrame({"r": record_ids, "p": pd.factorize(persons)[0]})
    pairs = frame.merge(frame, on="p", suffixes=("_a", "_b"))
    pairs = pairs[pairs["r_a"] < pairs["r_b"]]
    return pairs["r_a"].to_numpy(np.int64), pairs["r_b"].to_numpy(np.int64)


def _pair_keys(a: np.ndarray, b: np.ndarray, n: int) -> np.ndarray:
    return np.minimum(a, b).astype(np.int64) * n + np.maximum(a, b)


def matching_metrics(out_dir, truth_records: pd.DataFrame) -> dict:
    """Probabilistic matching against labels: blocking recall, and pairwise precision/recall/F1 of
    the scored pairs at each threshold.

    Recall counts the true pairs matching had to find: active records of one true person that the
    deterministic graph had not already put together.
    """
    from pathlib import Path

    out_dir = Path(out_dir)
    identity = pd.read_parquet(out_dir / "identity_map.parquet",
                               columns=["record_id", "source", "record_key", "status", "deterministic_group"])
    keys = pd.read_parquet(out_dir / "blocking_keys.parquet")
    scored = pd.read_parquet(out_dir / "scored_pairs.parquet", columns=["record_id_l", "record_id_r", "probability"])
    return matching_metrics_of(identity, keys, scored, truth_records)


def matching_metrics_of(identity: pd.DataFrame, keys: pd.DataFrame, scored: pd.DataFrame, truth_records: pd.DataFrame,
                        thresholds=THRESHOLDS) -> dict:
    """matching_metrics over the output tables themselves (identity map, blocking keys, scored pairs)."""
    identity = identity[["record_id", "source", "record_key", "status", "deterministic_group"]]
    frame = identity.merge(truth_records, on=["source", "record_key"], how="inner")
    frame = frame[frame["status"] != "deleted"]
    n = int(identity["record_id"].max()) + 1 if len(identity) else 1
    a, b = true_pairs(frame["record_id"].to_numpy(), frame["true_person"].to_numpy())
    group = np.full(n, -1, dtype=np.int64)
    group[identity["record_id"].to_numpy()] = identity["deterministic_group"].to_numpy()
    remaining = group[a] != group[b]

    rule_keys = keys.drop(columns="record_id")
    key_rows = np.full(n, -1, dtype=np.int64)
    key_rows[keys["record_id"].to_numpy()] = np.arange(len(keys))
    blocked = np.zeros(len(a), dtype=bool)
    per_rule = {}
    for rule in rule_keys.columns:
        k = rule_keys[rule].to_numpy(np.uint64)
        hit = (k[key_rows[a]] != 0) & (k[key_rows[a]] == k[key_rows[b]])
        per_rule[rule] = float(hit[remaining].mean()) if remaining.any() else 1.0
        blocked |= hit

    is_true = np.isin(_pair_keys(scored["record_id_l"].to_numpy(), scored["record_id_r"].to_numpy(), n),
                      _pair_keys(a, b, n))
    probability = scored["probability"].to_numpy()
    wanted = int(remaining.sum())
    table = []
    for t in thresholds:
        predicted = probability >= t
        tp = int((predicted & is_true).sum())
        precision = tp / predicted.sum() if predicted.any() else 1.0
        recall = tp / wanted if wanted else 1.0
        table.append({"threshold": t, "links": int(predicted.sum()), "true_links": tp, "precision": float(precision),
                      "recall": float(recall), "f1": _f1(precision, recall)})
    return {
        "true_pairs": len(a),
        "true_pairs_left_to_matching": wanted,
        "blocking_recall": float(blocked[remaining].mean()) if wanted else 1.0,
        "blocking_recall_all_pairs": float((blocked | ~remaining).mean()) if len(a) else 1.0,
        "blocking_recall_by_rule": per_rule,
        "thresholds": table,
        "note": "pairs scored below the output floor (matching.scored_pairs_min) count as not linked",
    }
