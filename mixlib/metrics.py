"""Clustering metrics: ACC with Hungarian matching, NMI (arithmetic mean), ARI.

ACC follows the usual definition of the deep-clustering literature (DEC, MixMate): the best
one-to-one map between clusters and classes found by the Hungarian algorithm on the contingency
table; when there are more clusters than classes the unmatched clusters count as errors, and
vice versa.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score


def _check(labels_true, labels_pred):
    t, p = np.asarray(labels_true), np.asarray(labels_pred)
    if t.ndim != 1 or t.shape != p.shape:
        raise ValueError(f"labels must be 1-D of equal length, got {t.shape} and {p.shape}")
    if t.size == 0:
        raise ValueError("labels are empty")
    return t, p


def contingency(labels_true, labels_pred) -> np.ndarray:
    """(n_clusters, n_classes) counts."""
    t, p = _check(labels_true, labels_pred)
    _, ti = np.unique(t, return_inverse=True)
    _, pi = np.unique(p, return_inverse=True)
    C = np.zeros((pi.max() + 1, ti.max() + 1), dtype=np.int64)
    np.add.at(C, (pi, ti), 1)
    return C


def clustering_accuracy(labels_true, labels_pred) -> float:
    """Fraction of points whose cluster maps to their class under the best one-to-one map."""
    C = contingency(labels_true, labels_pred)
    rows, cols = linear_sum_assignment(C, maximize=True)
    return float(C[rows, cols].sum() / C.sum())


def nmi(labels_true, labels_pred) -> float:
    t, p = _check(labels_true, labels_pred)
    return float(normalized_mutual_info_score(t, p, average_method="arithmetic"))


def ari(labels_true, labels_pred) -> float:
    t, p = _check(labels_true, labels_pred)
    return float(adjusted_rand_score(t, p))


def cluster_metrics(labels_true, labels_pred) -> dict[str, float]:
    """``{"nmi", "ari", "acc"}`` of a clustering against the true classes."""
    return {
        "nmi": nmi(labels_true, labels_pred),
        "ari": ari(labels_true, labels_pred),
        "acc": clustering_accuracy(labels_true, labels_pred),
    }
