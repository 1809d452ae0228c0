"""Experiment-level pure functions for the Gaussian-mixture EM models.

- The 25-component simulation of BigLearn-EM (Cong & Li, AAAI 2024, section "Simulated
  experiments", notebook ``main_biglearnEM_vs_EM_v1.ipynb`` of the reference code): means on the
  grid {-4, -2, 0, 2, 4}^2, variance 0.1, equal weights, 2,000 training / 5,000 test points; the
  test joint KL(q || p) to the true density q is the Monte-Carlo average
  mean_n [log q(x_n) - log p(x_n)] over the test set, as in the reference's ``KL_gmm_Full``.
- Reference densities for image data: a single maximum-likelihood Gaussian and the "naive GMM"
  (one Gaussian per true class, weights n_c / n).

Their figures are drawn by :mod:`mixlib.plots`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .models.biglearn import BigLearnEM
from .models.gmm_em import GaussianMixtureEM, log_gaussian_prob, regularize_covariances

GMM25_VARIANCE = 0.1
GMM25_GRID = (-4.0, -2.0, 0.0, 2.0, 4.0)
SIMULATION_METHODS = ("biglearn_em", "joint_em", "joint_em_plain")
# table labels; "Joint-EM" is the reference code's Joint-EM (plain EM, eigenvalue floor, no
# weight smoothing), so the reference's numbers sit beside the like-for-like method
SIMULATION_LABELS = {
    "biglearn_em": "BigLearn-EM",
    "joint_em": "Joint-EM (smoothed weights)",
    "joint_em_plain": "Joint-EM",
}


# --- the 25-component simulation --------------------------------------------------------------


def gmm25_parameters() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True parameters: weights (25,), means (25, 2) on the grid, covariances (25, 2, 2)."""
    g = np.asarray(GMM25_GRID)
    means = np.array([[a, b] for a in g for b in g], dtype=np.float64)
    K = len(means)
    return np.full(K, 1.0 / K), means, np.tile(GMM25_VARIANCE * np.eye(2), (K, 1, 1))


def make_gmm25_data(seed: int, n_train: int = 2000, n_test: int = 5000) -> dict:
    """Draw train and test sets from the 25-component mixture (one ``default_rng(seed)``).

    Returns ``dict(X_train (n_train, 2), y_train, X_test (n_test, 2), y_test, weights, means,
    covariances)``.
    """
    weights, means, covariances = gmm25_parameters()
    rng = np.random.default_rng(seed)
    out = {"weights": weights, "means": means, "covariances": covariances}
    for name, n in (("train", n_train), ("test", n_test)):
        y = rng.choice(len(weights), size=n, p=weights)
        X = means[y] + np.sqrt(GMM25_VARIANCE) * rng.standard_normal((n, 2))
        out[f"X_{name}"], out[f"y_{name}"] = X, y.astype(np.int64)
    return out


def mixture_log_density(X, weights, means, covariances) -> np.ndarray:
    """log p(x) (N,) of a full-covariance Gaussian mixture (float64, CPU)."""
    Xt = torch.as_tensor(np.asarray(X, dtype=np.float64))
    t = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float64))  # noqa: E731
    chol = torch.linalg.cholesky(t(covariances))
    lp = log_gaussian_prob(Xt, t(means), chol, "full") + torch.log(t(weights))
    return torch.logsumexp(lp, 1).numpy()


def monte_carlo_kl(X_test, true_params, weights, means, covariances) -> float:
    """Monte-Carlo KL(q || p) = mean over test points of log q(x) - log p(x), q the true density
    ``true_params = (weights, means, covariances)`` (the reference's ``KL_gmm_Full``)."""
    log_q = mixture_log_density(X_test, *true_params)
    log_p = mixture_log_density(X_test, weights, means, covariances)
    return float(np.mean(log_q - log_p))


def run_gmm25_simulation(
    seed: int,
    method: str,
    n_iter: int = 2000,
    *,
    n_inner: int = 5,
    reg_covar: float = 1e-5,
    n_train: int = 2000,
    n_test: int = 5000,
    device: str = "cpu",
    n_threads: int | None = 1,
    callback=None,
) -> dict:
    """One seed of the 25-component simulation.

    Parameters
    ----------
    seed : int
        Seeds the data and the model.
    method : {"biglearn_em", "joint_em", "joint_em_plain"}
        ``biglearn_em``: BigLearn-EM (p1=0.4, p2=0.5, Beta(5, 1), alpha=1/K); ``joint_em``: the
        same code with p1=1 (joint matching only, same weight smoothing and eigenvalue floor, so
        like is compared with like); ``joint_em_plain``: p1=1 and alpha=0, i.e. plain EM with an
        eigenvalue floor as the reference's Joint-EM.
    n_iter : int
        Outer iterations, each of ``n_inner`` EM steps (the reference: 2000 x 5).
    reg_covar : float
        Eigenvalue floor (1e-5 in the reference notebook).
    n_threads : int or None
        torch CPU threads for this call (restored afterwards); 1 by default because the
        2-D problem is dominated by per-operation overhead, where threads only add contention.
    callback : callable or None
        Gets every outer iteration's :class:`~mixlib.models.base.Progress`, its metrics with
        the test KL (the caller's progress report).

    Returns
    -------
    dict with ``kl_history`` (test joint KL after every outer iteration), ``final_kl`` (the last
    iterate: the number to report), ``min_kl`` (minimum over iterations, the reference's
    optimistic statistic, for comparison only), ``loglik_history``, ``seed``, ``method``,
    ``n_iter``, ``n_inner``.
    """
    if method not in SIMULATION_METHODS:
        raise ValueError(f"method must be one of {SIMULATION_METHODS}, got {method!r}")
    data = make_gmm25_data(seed, n_train, n_test)
    true = (data["weights"], data["means"], data["covariances"])
    log_q = mixture_log_density(data["X_test"], *true)
    X_test = torch.as_tensor(data["X_test"])

    kl = []

    def test_kl(progress):  # after every outer iteration: KL(q || p) on the test points
        weights, means, covariances = progress.state()
        Xd = X_test.to(means)
        lp = log_gaussian_prob(Xd, means, torch.linalg.cholesky(covariances), "full")
        log_p = torch.logsumexp(lp + torch.log(weights), 1).double().cpu().numpy()
        kl.append(float(np.mean(log_q - log_p)))
        if callback is not None:  # the caller's progress, with the test KL
            callback(dataclasses.replace(progress, metrics={**progress.metrics, "test_kl": kl[-1]}))

    p1, alpha = {"biglearn_em": (0.4, None), "joint_em": (1.0, None), "joint_em_plain": (1.0, 0.0)}[
        method
    ]
    model = BigLearnEM(
        n_clusters=25,
        n_iter=n_iter,
        n_inner=n_inner,
        p1=p1,
        p2=max(p1, 0.5),
        reg_covar=reg_covar,
        alpha_pi=alpha,
        init="reference",
        random_state=seed,
        device=device,
    )
    threads = torch.get_num_threads()
    try:
        if n_threads is not None:
            torch.set_num_threads(int(n_threads))
        model.fit(data["X_train"], callback=test_kl)
    finally:
        torch.set_num_threads(threads)
    return {
        "seed": int(seed),
        "method": method,
        "n_iter": int(n_iter),
        "n_inner": int(n_inner),
        "kl_history": kl,
        "final_kl": float(kl[-1]),
        "min_kl": float(np.min(kl)),
        "loglik_history": model.history_["loglik"],
    }


def summarize_simulation(records: list[dict]) -> pd.DataFrame:
    """Mean, std (ddof=1) and n of ``final_kl`` and ``min_kl`` per method."""
    df = pd.DataFrame(
        [{k: r[k] for k in ("method", "seed", "final_kl", "min_kl")} for r in records]
    )
    return df.groupby("method")[["final_kl", "min_kl"]].agg(["mean", "std", "count"])


def simulation_frame(records: list[dict]) -> pd.DataFrame:
    """Tidy frame of simulation runs: method, label, seed, final_kl, min_kl, n_iter, n_inner and
    the job_key / run_id of the MLflow run."""
    if not records:
        raise ValueError("no simulation records to aggregate")
    df = pd.DataFrame(
        [
            {
                "method": r["method"],
                "label": SIMULATION_LABELS[r["method"]],
                **{k: r[k] for k in ("seed", "final_kl", "min_kl", "n_iter", "n_inner")},
                **{k: r.get(k) for k in ("job_key", "run_id")},  # the MLflow run, traceable
            }
            for r in records
        ]
    )
    order = {m: i for i, m in enumerate(SIMULATION_METHODS)}
    key = lambda c: c.map(order) if c.name == "method" else c  # noqa: E731
    return df.sort_values(["method", "seed"], key=key).reset_index(drop=True)


def gmm25_reference(reference_csv, name: str | None = "gmm25_simulation") -> pd.DataFrame | None:
    """The reference code's test joint KL (label, mean, std) from the reference CSV rows with
    ``dataset == name`` and ``metric == "test_joint_kl"``; None if there are none."""
    if not reference_csv or not name or not Path(reference_csv).exists():
        return None
    ref = pd.read_csv(reference_csv)
    ref = ref[(ref["dataset"] == name) & (ref["metric"] == "test_joint_kl")]
    if ref.empty:
        return None
    return pd.DataFrame({"label": ref["method"], "mean": ref["mean"], "std": ref["std"]})


def gmm25_table(
    df: pd.DataFrame, reference: pd.DataFrame | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(cells, best)`` for :func:`mixlib.tables.write_tables`: rows ``final KL`` (last iterate,
    our number) and ``min KL`` (minimum over iterations, the reference code's statistic), one
    column per method as ``mean ± std (n=seeds)``, then one ``[reference code]`` column per
    reference method (in the ``min KL`` row); the lowest mean of each row is marked best.

    ``df`` is :func:`simulation_frame`'s output, ``reference`` :func:`gmm25_reference`'s."""
    rows = {"final KL": "final_kl", "min KL": "min_kl"}
    labels = list(dict.fromkeys(df["label"]))
    means = pd.DataFrame(np.nan, index=list(rows), columns=labels)
    cells = pd.DataFrame("", index=list(rows), columns=labels)
    for label, g in df.groupby("label", sort=False):
        for row, col in rows.items():
            v = g[col].to_numpy(dtype=np.float64)
            sd = f" ± {v.std(ddof=1):.3f}" if len(v) > 1 else ""
            cells.loc[row, label] = f"{v.mean():.3f}{sd} (n={len(v)})"
            means.loc[row, label] = v.mean()
    if reference is not None:  # reference columns in the order of ours
        rank = {label: i for i, label in enumerate(labels)}
        reference = reference.sort_values("label", key=lambda c: c.map(rank).fillna(len(rank)))
        for r in reference.itertuples():
            col = f"{r.label} [reference code]"
            cells[col], means[col] = "", np.nan
            sd = "" if pd.isna(r.std) else f" ± {r.std:.3f}"
            cells.loc["min KL", col] = f"{r.mean:.3f}{sd}"
            means.loc["min KL", col] = r.mean
    best = means.eq(means.min(axis=1), axis=0) & means.notna()
    cells.index.name = "metric"
    return cells, best


# --- reference models for image data -------------------------------------------------------------


def _regularized(covs: np.ndarray, reg: str, reg_covar: float) -> np.ndarray:
    """Covariances (K, D, D) regularised as :class:`GaussianMixtureEM` does after an M-step."""
    t = torch.as_tensor(np.asarray(covs, dtype=np.float64))
    return regularize_covariances(t, reg, reg_covar, "full").numpy()


def _ml_covariance(X: np.ndarray) -> np.ndarray:
    """Maximum-likelihood covariance (D, D) of the rows of X (N, D) (divides by N)."""
    diff = X - X.mean(0)
    return diff.T @ diff / len(X)


def fit_single_gaussian(X, reg_covar: float, random_state=None, *, reg: str) -> GaussianMixtureEM:
    """The maximum-likelihood Gaussian (sample mean, covariance / N), regularised like
    :class:`GaussianMixtureEM`: ``reg="ridge"`` adds ``reg_covar`` I, ``"floor"`` clips the
    eigenvalues at ``reg_covar``."""
    X = np.asarray(X, dtype=np.float64)
    cov = _regularized(_ml_covariance(X)[None], reg, reg_covar)
    return GaussianMixtureEM.from_parameters(
        np.ones(1), X.mean(0, keepdims=True), cov, device="cpu", random_state=random_state
    )


def fit_naive_gmm(X, y, reg_covar: float, random_state=None, *, reg: str) -> GaussianMixtureEM:
    """The "naive GMM": one ML Gaussian per true class, weights n_c / n (regularised as
    :func:`fit_single_gaussian`)."""
    X, y = np.asarray(X, dtype=np.float64), np.asarray(y)
    classes = np.unique(y)
    weights = np.array([(y == c).mean() for c in classes])
    means = np.stack([X[y == c].mean(0) for c in classes])
    covs = _regularized(np.stack([_ml_covariance(X[y == c]) for c in classes]), reg, reg_covar)
    return GaussianMixtureEM.from_parameters(
        weights, means, covs, device="cpu", random_state=random_state
    )


def fit_loglik_runs(
    X, inits=("random", "kmeans"), seeds=(0, 1, 2), callback=None, **gmm_params
) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Fit :class:`GaussianMixtureEM` once per (init, seed); ``callback`` is passed to every
    fit (its progress).

    Returns
    -------
    curves : DataFrame with init, seed, iteration, loglik (mean log-likelihood per sample at the
        parameters entering that iteration's M-step, ``history_["loglik"]``)
    final : DataFrame with one row per fit: init, seed, loglik (mean log-likelihood at the
        final parameters), n_iter, converged
    models : dict (init, seed) -> fitted model
    """
    rows, finals, models = [], [], {}
    for init in inits:
        for seed in seeds:
            model = GaussianMixtureEM(init=init, random_state=int(seed), **gmm_params)
            model.fit(X, callback=callback)
            models[(init, int(seed))] = model
            for it, ll in enumerate(model.history_["loglik"], start=1):
                rows.append({"init": init, "seed": int(seed), "iteration": it, "loglik": ll})
            finals.append(
                {
                    "init": init,
                    "seed": int(seed),
                    "loglik": model.score(X),
                    "n_iter": int(model.n_iter_),
                    "converged": bool(model.converged_),
                }
            )
    return pd.DataFrame(rows), pd.DataFrame(finals), models


def loglik_curves(X, inits=("random", "kmeans"), seeds=(0, 1, 2), **gmm_params) -> pd.DataFrame:
    """Fit :class:`GaussianMixtureEM` per (init, seed); tidy frame of init, seed, iteration,
    loglik (mean log-likelihood per sample)."""
    return fit_loglik_runs(X, inits, seeds, **gmm_params)[0]


def exercise_table(final: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(cells, best)`` of the exercise's final mean log-likelihoods: one row per init of the
    fitted GMM (mean ± std over seeds, n) and one per reference density, highest mean bold."""
    rows, means = {}, {}
    for (model, init), g in final.groupby(["model", final["init"].fillna("")], sort=False):
        v = g["loglik"].to_numpy(dtype=np.float64)
        label = f"GMM by EM, {init} init" if model == "gmm_em" else model.replace("_", " ")
        sd = f" ± {v.std(ddof=1):.2f}" if len(v) > 1 else ""
        rows[label], means[label] = f"{v.mean():.2f}{sd} (n={len(v)})", v.mean()
    cells = pd.DataFrame({"mean log-likelihood": rows})
    cells.index.name = "model"
    m = pd.Series(means)
    best = pd.DataFrame({"mean log-likelihood": m == m.max()})
    return cells, best


def sample_rows(
    X, y, fitted: GaussianMixtureEM, *, n_samples: int, reg_covar: float, reg: str, seed: int
) -> list[tuple[str, np.ndarray]]:
    """The exercise's image rows: ``n_samples`` samples of the single Gaussian, of the naive GMM
    and of the fitted GMM, and the fitted GMM's component means, each ``(label, images)``
    (:func:`mixlib.plots.image_rows` draws them)."""
    single = fit_single_gaussian(X, reg_covar, reg=reg)
    naive = fit_naive_gmm(X, y, reg_covar, reg=reg)
    return [
        ("single Gaussian", single.sample(n_samples, random_state=seed)[0]),
        ("naive GMM", naive.sample(n_samples, random_state=seed)[0]),
        ("fitted GMM", fitted.sample(n_samples, random_state=seed)[0]),
        ("fitted means", fitted.means_[:n_samples]),
    ]
