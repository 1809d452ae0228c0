"""Time per EM iteration of today's code and of the pinned baseline, in the same run.

BigLearn-EM (200-iteration protocol of the paper, here ``--bl-iters`` outer iterations, each
``n_inner=5`` EM steps on a joint, marginal or rotated-marginal block plus a full
log-likelihood) and Joint-EM (``GaussianMixtureEM(reg="floor", reg_covar=1e-5)``) on the
BigLearn-EM tabular benchmarks Pendigits (7,494 x 16, K=12, training part) and Letter
(20,000 x 16, K=26), min-max scaled per feature, full covariances, float64; and one
GaussianMixtureEM iteration on MNIST at 16x16 (70,000 x 256, K=10), or on mnist5k at 16x16
(5,000 x 256) when MNIST is not staged.

The baseline is the code of commit ``779661a`` (before the batched kernels), read with
``git show`` into a throw-away package, so it runs from any checkout of this repository whose
history holds that commit (not a shallow clone).
Both run from the same initial parameters with the same seeds; the script prints, per case,
the time per (outer) iteration of both and their ratio, the achieved FLOP rate of the new code
as a fraction of a 2000 x 2000 float64 matmul measured in the same run, and the largest
relative difference between the two log-likelihood trajectories (must be <= 1e-6).

    python benchmarks/bench_em_iterations.py [--threads 1] [--raw-dir ../shared/data]
    python benchmarks/bench_em_iterations.py --crossover   # the D limit of the batched path

``--threads`` sets numpy's BLAS and torch's pools for both versions; inside a fit today's code
runs torch at one thread (the baseline did so for Joint-EM, not for BigLearn-EM) and, on the
batched small-D path, BLAS at one thread too.

FLOPs counted per EM step on an m-dimensional block: 2 N K m^2 (N K m^2 for the Mahalanobis
terms of the E-step, N K m^2 for the scatter matrices of the M-step; the classic count, not the
work of either implementation); a BigLearn-EM outer iteration adds N K D^2 for its
log-likelihood.
"""

from __future__ import annotations

import argparse
import inspect
import sys
import time
import warnings
from functools import partial
from pathlib import Path

import numpy as np
import torch
from baseline import BASELINE_COMMIT, REPO, baseline_modules, matmul_rate

from mixlib.data import prepare
from mixlib.models import gmm_em
from mixlib.models.biglearn import BigLearnEM
from mixlib.models.gmm_em import GaussianMixtureEM

# --- the pinned baseline --------------------------------------------------------------------------


def load_baseline(commit: str = BASELINE_COMMIT):
    """(GaussianMixtureEM, BigLearnEM) of ``commit`` (:mod:`baseline`)."""
    mods = baseline_modules(["gmm_em", "biglearn"], commit)
    return mods["gmm_em"].GaussianMixtureEM, mods["biglearn"].BigLearnEM


# --- data -----------------------------------------------------------------------------------------


def load_tabular(name: str, raw_dir: str):
    if name == "pendigits":
        spec = {"source": "pendigits", "split": "train_test", "n_clusters": 12}
    else:
        spec = {"source": "letter"}
    spec["preprocess"] = {"scale": "minmax_feature"}
    ds = prepare(name, spec, raw_dir=raw_dir)
    X = ds.X if ds.is_train is None else ds.X[ds.is_train]
    return X.astype(np.float64), int(ds.meta["n_clusters"])


def load_mnist16(raw_dir: str):
    pre = {"scale": "minmax", "resize": [16, 16]}
    if (Path(raw_dir) / "mnist").is_dir():
        ds = prepare("mnist_16", {"source": "mnist", "preprocess": pre}, raw_dir=raw_dir)
        return ds.X.astype(np.float64), "MNIST 16x16"
    ds = prepare("mnist5k_16", {"source": "mnist5k", "preprocess": pre})
    return ds.X.astype(np.float64), "mnist5k 16x16 (MNIST not staged)"


# --- timing ---------------------------------------------------------------------------------------


def time_biglearn(cls, X, K, n_iter, dtype="float64"):
    """(seconds per outer iteration after the first, model): timestamps from the per-iteration
    hook (``callback`` today, ``monitor`` in the baseline)."""
    stamps = []

    def stamp(*_):
        stamps.append(time.perf_counter())
        return {}

    model = cls(n_clusters=K, n_iter=n_iter, random_state=0, device="cpu", dtype=dtype)
    hook = "callback" if "callback" in inspect.signature(model.fit).parameters else "monitor"
    model.fit(X, **{hook: stamp})
    return (stamps[-1] - stamps[0]) / (len(stamps) - 1), model


def time_joint(cls, X, K, n_iter, init, reg_covar=1e-5):
    """(seconds per iteration, model) of ``GaussianMixtureEM(reg="floor")`` run for
    ``n_iter + 1`` iterations from the initial parameters ``init`` (weights, means, covariances).

    Iterations are timed by the calls of ``compute_cholesky`` in the fit loop (one after each
    M-step, in both versions), from the end of the first iteration (which also holds the E-step
    of the INIT labels) to the end of the last.
    """
    module = sys.modules[cls.__module__]
    stamps = []
    orig = module.compute_cholesky

    def stamped(*a, **k):
        out = orig(*a, **k)
        stamps.append(time.perf_counter())
        return out

    model = cls(
        n_clusters=K,
        covariance_type="full",
        reg="floor",
        reg_covar=reg_covar,
        max_iter=n_iter + 1,
        tol=0,
        weights_init=init[0],
        means_init=init[1],
        covariances_init=init[2],
        random_state=0,
        device="cpu",
    )
    module.compute_cholesky = stamped
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(X)
    finally:
        module.compute_cholesky = orig
    # stamps: initial parameters, one per iteration, _set_state
    assert len(stamps) == n_iter + 3, len(stamps)
    return (stamps[n_iter + 1] - stamps[1]) / n_iter, model


def joint_init(X, K, reg_covar=1e-5, seed=0):
    """Initial parameters from one k-means assignment (GaussianMixtureEM's init="kmeans")."""
    m = GaussianMixtureEM(
        n_clusters=K, reg="floor", reg_covar=reg_covar, max_iter=1, random_state=seed
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m.fit(X)
    return m.weights_, m.means_, m.covariances_


def best_of(repeats, run_old, run_new):
    """(t_old, model_old, t_new, model_new): the two alternately, the best time of each."""
    best_old = best_new = (np.inf, None)
    for _ in range(repeats):
        best_old = min(best_old, run_old(), key=lambda r: r[0])
        best_new = min(best_new, run_new(), key=lambda r: r[0])
    return (*best_old, *best_new)


def max_rel_diff(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300)))


def report(label, t_old, t_new, flops, rate, diff):
    frac = flops / t_new / rate
    print(
        f"{label:<34} old {1e3 * t_old:9.1f} ms  new {1e3 * t_new:8.1f} ms  "
        f"ratio {t_old / t_new:6.1f}x  {flops / t_new / 1e9:6.1f} GFLOP/s "
        f"({100 * frac:4.1f}% of matmul)  max rel dLL {diff:.1e}",
        flush=True,
    )
    return diff


# --- the crossover of the two full-covariance paths -----------------------------------------------


def crossover(N=4000, K=10, dims=(8, 16, 32, 64, 96, 128, 160, 192), repeats=3):
    """One E-step + M-step (pure functions) on the moment path and the per-component path."""
    rng = np.random.default_rng(0)
    print(f"N={N}, K={K}, float64: ms per E+M step (best of {repeats})")
    for D in dims:
        X = torch.as_tensor(rng.random((N, D)))
        means = torch.as_tensor(rng.random((K, D)))
        cov = torch.eye(D, dtype=torch.float64).expand(K, D, D) * 0.05
        chol = gmm_em.compute_cholesky(cov, "full")
        w = torch.full((K,), 1.0 / K, dtype=torch.float64)
        times = {}
        for path, limit in (("moments", 2**40), ("per-component", 0)):
            saved = gmm_em._BATCH_ELEMENTS, gmm_em._MOMENTS_MAX_D
            gmm_em._BATCH_ELEMENTS, gmm_em._MOMENTS_MAX_D = limit, 10**9
            try:
                feats = gmm_em.MomentFeatures(X) if limit else None
                best = np.inf
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    if feats is not None:
                        _, r = feats.e_step(w, means, chol)
                        feats.gaussian_parameters(r)
                    else:
                        _, lr = gmm_em.estimate_log_prob_resp(X, w, means, chol, "full")
                        gmm_em.estimate_gaussian_parameters(X, lr.exp(), "full")
                    best = min(best, time.perf_counter() - t0)
                times[path] = best
            finally:
                gmm_em._BATCH_ELEMENTS, gmm_em._MOMENTS_MAX_D = saved
        print(
            f"D={D:4d}  moments {1e3 * times['moments']:8.2f}  per-component "
            f"{1e3 * times['per-component']:8.2f}  "
            f"ratio {times['per-component'] / times['moments']:5.2f}",
            flush=True,
        )


# --- main -----------------------------------------------------------------------------------------


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--threads", type=int, default=1, help="numpy BLAS and torch threads")
    ap.add_argument("--raw-dir", default=str(REPO.parent / "shared" / "data"))
    ap.add_argument("--datasets", nargs="*", default=["pendigits", "letter"])
    ap.add_argument("--bl-iters", type=int, default=20, help="BigLearn-EM outer iterations")
    ap.add_argument("--em-iters", type=int, default=10, help="Joint-EM iterations")
    ap.add_argument("--repeats", type=int, default=2, help="best of (tabular cases)")
    ap.add_argument("--no-mnist", action="store_true", help="skip the 256-dimensional case")
    ap.add_argument("--float32", action="store_true", help="also run BigLearn-EM in float32")
    ap.add_argument("--crossover", action="store_true", help="only time the two paths vs D")
    args = ap.parse_args(argv)

    from threadpoolctl import threadpool_limits

    threadpool_limits(args.threads)
    torch.set_num_threads(args.threads)
    if args.crossover:
        crossover()
        return 0
    OldGMM, OldBL = load_baseline()
    rate = matmul_rate(*np.random.default_rng(0).random((2, 2000, 2000)))  # float64
    print(
        f"torch {torch.__version__}, numpy {np.__version__}, threads={args.threads}; "
        f"2000x2000 float64 matmul: {rate / 1e9:.1f} GFLOP/s; baseline: {BASELINE_COMMIT}"
    )
    worst = 0.0
    for name in args.datasets:
        X, K = load_tabular(name, args.raw_dir)
        N, D = X.shape
        # BigLearn-EM: old and new alternately (same seed: same tasks), best of --repeats
        t_old, m_old, t_new, m_new = best_of(
            args.repeats,
            partial(time_biglearn, OldBL, X, K, args.bl_iters),
            partial(time_biglearn, BigLearnEM, X, K, args.bl_iters),
        )
        dims = np.asarray(m_new.history_["n_dims"][1:])
        flops = (m_new.n_inner * 2 * N * K * dims**2 + N * K * D**2).mean()
        diff = max_rel_diff(m_new.history_["loglik"], m_old.history_["loglik"])
        worst = max(
            worst, report(f"BigLearn-EM {name} ({N}x{D}, K={K})", t_old, t_new, flops, rate, diff)
        )
        if args.float32:
            t32, m32 = time_biglearn(BigLearnEM, X, K, args.bl_iters, dtype="float32")
            t32o, m32o = time_biglearn(OldBL, X, K, args.bl_iters, dtype="float32")
            print(
                f"  float32: old {1e3 * t32o:.1f} ms  new {1e3 * t32:.1f} ms per outer iteration; "
                "max rel dLL vs float64: "
                f"old {max_rel_diff(m32o.history_['loglik'], m_old.history_['loglik']):.1e}, "
                f"new {max_rel_diff(m32.history_['loglik'], m_old.history_['loglik']):.1e}"
            )
        # Joint-EM from the same k-means start
        init = joint_init(X, K)
        t_old, m_old, t_new, m_new = best_of(
            args.repeats,
            partial(time_joint, OldGMM, X, K, args.em_iters, init),
            partial(time_joint, GaussianMixtureEM, X, K, args.em_iters, init),
        )
        diff = max_rel_diff(m_new.history_["loglik"], m_old.history_["loglik"])
        worst = max(
            worst,
            report(f"Joint-EM {name} ({N}x{D}, K={K})", t_old, t_new, 2 * N * K * D**2, rate, diff),
        )
    if not args.no_mnist:
        X, label = load_mnist16(args.raw_dir)
        N, D = X.shape
        K = 10
        init = joint_init(X[:5000], K, reg_covar=1e-2)
        t_old, m_old = time_joint(OldGMM, X, K, 1, init, reg_covar=1e-2)
        t_new, m_new = time_joint(GaussianMixtureEM, X, K, 1, init, reg_covar=1e-2)
        diff = max_rel_diff(m_new.history_["loglik"], m_old.history_["loglik"])
        worst = max(
            worst,
            report(f"GMM {label} ({N}x{D}, K={K})", t_old, t_new, 2 * N * K * D**2, rate, diff),
        )
    ok = worst <= 1e-6
    print(
        f"max relative log-likelihood difference, all cases: {worst:.1e} "
        f"({'OK' if ok else 'FAIL'} <= 1e-6)"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
