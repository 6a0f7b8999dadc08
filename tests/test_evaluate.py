"""Cluster metrics checked against hand-computed values."""

import pytest

from resolver.outputs.evaluate import cluster_metrics


def test_metrics_match_hand_computed_values():
    m = cluster_metrics(["A", "A", "B", "B", "C"], [1, 1, 1, 2, 2])
    assert m.pairwise_precision == pytest.approx(1 / 2)
    assert m.pairwise_recall == pytest.approx(1 / 4)
    assert m.pairwise_f1 == pytest.approx(2 * 0.5 * 0.25 / 0.75)
    assert m.bcubed_precision == pytest.approx(4 / 5)
    assert m.bcubed_recall == pytest.approx(8 / 15)
    assert m.overmerged_clusters == 1
    assert m.split_true_persons == 2
    assert (m.entities, m.predicted_clusters, m.true_clusters) == (5, 3, 2)


def test_perfect_clustering_scores_one_whatever_the_label_names():
    m = cluster_metrics(["x", "x", "y"], [7, 7, 9])
    assert m.pairwise_precision == m.pairwise_recall == m.bcubed_f1 == 1.0
    assert m.overmerged_clusters == m.split_true_persons == 0


def test_unresolved_entities_are_singletons_not_one_cluster():
    m = cluster_metrics([None, None, "a"], [1, 1, 2])
    assert m.predicted_clusters == 3
    assert m.pairwise_recall == 0.0
    assert m.pairwise_precision == 1.0  # no predicted pairs at all


def test_everything_in_one_cluster_has_full_recall_and_low_precision():
    m = cluster_metrics(["a"] * 4, [1, 1, 2, 2])
    assert m.pairwise_recall == 1.0
    assert m.pairwise_precision == pytest.approx(2 / 6)
    assert m.overmerged_clusters == 1


def test_labels_must_align():
    with pytest.raises(ValueError):
        cluster_metrics(["a"], [1, 2])
    with pytest.raises(ValueError):
        cluster_metrics(["a", "b"], [1, None])
