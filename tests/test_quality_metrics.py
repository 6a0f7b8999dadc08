"""benchmarks/quality_metrics.py on tiny hand-computed examples (the quality harness's one metric code)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from quality_metrics import quality_metrics  # noqa: E402

# Six records, three true entities: E1 = {a, b, c}, E2 = {d, e}, E3 = {f}  (4 true pairs).
TRUTH = pd.DataFrame({"key": list("abcdef"), "entity": ["E1", "E1", "E1", "E2", "E2", "E3"]})


def clusters(mapping: dict[str, object]) -> pd.DataFrame:
    return pd.DataFrame({"key": list(mapping), "cluster": list(mapping.values())})


def test_hand_computed_clustering():
    # Predicted {a, b}, {c, d, e}, {f}.
    m = quality_metrics(TRUTH, clusters({"a": 1, "b": 1, "c": 2, "d": 2, "e": 2, "f": 3}))
    # Cluster-implied pairs: predicted 1 + 3 + 0 = 4; true 3 + 1 = 4; TP = ab + de = 2.
    assert (m["pairwise"]["tp"], m["pairwise"]["predicted"], m["pairwise"]["actual"]) == (2, 4, 4)
    assert m["pairwise"]["precision"] == pytest.approx(0.5)
    assert m["pairwise"]["recall"] == pytest.approx(0.5)
    assert m["pairwise"]["f1"] == pytest.approx(0.5)
    # Exact clusters: only {f} equals a true entity: 1 of 3 predicted, 1 of 3 true.
    assert m["cluster"]["precision"] == pytest.approx(1 / 3)
    assert m["cluster"]["recall"] == pytest.approx(1 / 3)
    # B-cubed precision: a 1, b 1, c 1/3, d 2/3, e 2/3, f 1 -> 14/3 / 6 = 7/9; recall: a 2/3, b 2/3,
    # c 1/3, d 1, e 1, f 1 -> 7/9.
    assert m["bcubed"]["precision"] == pytest.approx(7 / 9)
    assert m["bcubed"]["recall"] == pytest.approx(7 / 9)
    assert m["bcubed"]["f1"] == pytest.approx(7 / 9)
    # {c, d, e} holds E1 and E2: 1 of 3 clusters over-merged; E1 is in two clusters: 1 of 3 split.
    assert m["over_merged"] == {"clusters": 1, "share": pytest.approx(1 / 3)}
    assert m["split"] == {"entities": 1, "share": pytest.approx(1 / 3)}
    assert m["largest_cluster"] == 3
    assert (m["records"], m["true_entities"], m["true_pairs"], m["predicted_clusters"]) == (6, 3, 4, 3)
    assert m["links"] is None


def test_perfect_clustering_and_label_types_do_not_matter():
    m = quality_metrics(TRUTH, clusters({"f": "x", "a": 7, "b": 7, "c": 7, "d": None, "e": None}))
    # d and e have null labels: singletons, so E2 is split and its pair missed.
    assert m["pairwise"]["tp"] == 3 and m["pairwise"]["recall"] == pytest.approx(0.75)
    assert m["pairwise"]["precision"] == 1.0
    assert m["split"]["entities"] == 1
    perfect = quality_metrics(TRUTH, clusters({"a": 0, "b": 0, "c": 0, "d": 1, "e": 1, "f": 2}))
    for name in ("pairwise", "cluster", "bcubed"):
        assert perfect[name]["f1"] == pytest.approx(1.0), name
    assert perfect["over_merged"]["clusters"] == 0 and perfect["split"]["entities"] == 0


def test_records_a_tool_did_not_output_are_singletons_and_unknown_keys_are_ignored():
    m = quality_metrics(TRUTH, clusters({"a": 1, "b": 1, "zz": 1}))
    assert m["records_missing_from_output"] == 4
    assert m["unknown_cluster_keys"] == 1
    assert m["predicted_clusters"] == 5  # {a, b}, {c}, {d}, {e}, {f}
    assert (m["pairwise"]["tp"], m["pairwise"]["predicted"]) == (1, 1)
    assert m["pairwise"]["precision"] == 1.0
    assert m["pairwise"]["recall"] == pytest.approx(0.25)
    assert m["pairwise"]["f1"] == pytest.approx(0.4)
    nothing = quality_metrics(TRUTH, None)
    assert nothing["predicted_clusters"] == 6
    assert nothing["pairwise"]["recall"] == 0.0 and nothing["pairwise"]["f1"] == 0.0
    assert nothing["bcubed"]["precision"] == 1.0
    assert nothing["bcubed"]["recall"] == pytest.approx((1 / 3 * 3 + 1 / 2 * 2 + 1) / 6)


def test_links_at_threshold():
    pairs = pd.DataFrame({
        "key_l": ["a", "b", "c", "a", "e", "a"],
        "key_r": ["b", "a", "d", "c", "e", "zz"],
        "probability": [0.9, 0.95, 0.99, 0.5, 1.0, 0.99],
    })
    m = quality_metrics(TRUTH, clusters({}), pairs, threshold=0.85)
    # Distinct links >= 0.85 between two distinct known records: a-b (true, listed twice), c-d (false).
    links = m["links"]
    assert (links["tp"], links["predicted"], links["actual"]) == (1, 2, 4)
    assert links["precision"] == pytest.approx(0.5)
    assert links["recall"] == pytest.approx(0.25)
    assert links["f1"] == pytest.approx(1 / 3)
    assert links["unknown_keys"] == 1
    lower = quality_metrics(TRUTH, clusters({}), pairs, threshold=0.5)["links"]
    assert (lower["tp"], lower["predicted"]) == (2, 3)  # a-c (true) joins at 0.5


def test_links_with_groups_count_every_pair_inside_a_group_once():
    pairs = pd.DataFrame({"key_l": ["a", "c"], "key_r": ["b", "d"], "probability": [0.9, 0.9]})
    groups = pd.DataFrame({"key": ["a", "b", "c"], "group": ["g", "g", "g"]})
    links = quality_metrics(TRUTH, clusters({}), pairs, threshold=None, groups=groups)["links"]
    # Group {a, b, c}: 3 pairs, all true; a-b is inside it (counted once); c-d crosses (false).
    assert (links["tp"], links["predicted"], links["actual"]) == (3, 4, 4)
    assert links["f1"] == pytest.approx(0.75)


def test_a_giant_cluster_is_counted_arithmetically():
    n = 300_000
    truth = pd.DataFrame({"key": np.arange(n).astype(str), "entity": np.arange(n) % 2})
    m = quality_metrics(truth, pd.DataFrame({"key": truth["key"], "cluster": 0}))
    half = n // 2
    assert m["pairwise"]["predicted"] == n * (n - 1) // 2
    assert m["pairwise"]["tp"] == 2 * (half * (half - 1) // 2)
    assert m["over_merged"]["share"] == 1.0 and m["largest_cluster"] == n


def test_truth_must_be_unique_and_complete():
    with pytest.raises(ValueError):
        quality_metrics(pd.concat([TRUTH, TRUTH.head(1)]), None)
    with pytest.raises(ValueError):
        quality_metrics(TRUTH.assign(entity=[None, 1, 1, 2, 2, 3]), None)


def test_agrees_with_resolver_evaluate_cluster_metrics():
    from resolver.outputs.evaluate import cluster_metrics

    rng = np.random.default_rng(3)
    n = 2_000
    truth = pd.DataFrame({"key": [f"k{i}" for i in range(n)], "entity": rng.integers(0, 700, n)})
    predicted = np.where(rng.random(n) < 0.8, truth["entity"], rng.integers(0, 700, n))
    m = quality_metrics(truth, pd.DataFrame({"key": truth["key"], "cluster": predicted}))
    ref = cluster_metrics(predicted, truth["entity"])
    assert m["pairwise"]["f1"] == pytest.approx(ref.pairwise_f1)
    assert m["pairwise"]["precision"] == pytest.approx(ref.pairwise_precision)
    assert m["bcubed"]["f1"] == pytest.approx(ref.bcubed_f1)
    assert m["cluster"]["f1"] == pytest.approx(ref.cluster_f1)
    assert m["over_merged"]["clusters"] == ref.overmerged_clusters
    assert m["split"]["entities"] == ref.split_true_persons
    assert m["largest_cluster"] == ref.largest_cluster
