import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from mixlib.metrics import ari, cluster_metrics, clustering_accuracy, contingency, nmi


def test_acc_hand_computed_permutation():
    y = np.array([0, 0, 1, 1, 2, 2])
    assert clustering_accuracy(y, np.array([2, 2, 0, 0, 1, 1])) == 1.0
    # one point wrong: 5/6
    assert clustering_accuracy(y, np.array([2, 2, 0, 0, 1, 0])) == pytest.approx(5 / 6)


def test_acc_more_clusters_than_classes():
    y = np.array([0, 0, 0, 1, 1, 1])
    pred = np.array([0, 0, 1, 2, 2, 3])  # best map: 0->0 (2), 2->1 (2); clusters 1, 3 unmatched
    assert clustering_accuracy(y, pred) == pytest.approx(4 / 6)


def test_acc_fewer_clusters_than_classes():
    y = np.array([0, 1, 2, 3])
    assert clustering_accuracy(y, np.zeros(4, dtype=int)) == pytest.approx(1 / 4)


def test_contingency_counts():
    C = contingency([0, 0, 1], [5, 7, 7])
    assert C.tolist() == [[1, 0], [1, 1]]


def test_nmi_ari_match_sklearn():
    rng = np.random.default_rng(0)
    y, p = rng.integers(4, size=200), rng.integers(6, size=200)
    assert nmi(y, p) == pytest.approx(normalized_mutual_info_score(y, p))
    assert ari(y, p) == pytest.approx(adjusted_rand_score(y, p))
    assert set(cluster_metrics(y, p)) == {"nmi", "ari", "acc"}


def test_bad_labels():
    with pytest.raises(ValueError, match="equal length"):
        clustering_accuracy([0, 1], [0])
