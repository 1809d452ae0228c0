"""Time per EM iteration: mixlib's GaussianMixtureEM vs scikit-learn's GaussianMixture.

Full covariance, K=10, float64, mnist5k at 16x16 (5000 x 256), both started from the same
parameters and run for the same fixed number of iterations (tol=0) in the same process.
Prints the per-iteration times and the ratio sklearn / ours (>= 1 means ours is faster), and the
same figure on CUDA when a GPU is present.

    python benchmarks/bench_em.py [--iters 5] [--repeats 2] [--threads N]
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch
from sklearn.mixture import GaussianMixture

from mixlib.data import prepare
from mixlib.models.gmm_em import GaussianMixtureEM


def _time_fit(make, X, repeats):
    best = np.inf
    for _ in range(repeats):
        model = make()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t0 = time.perf_counter()
            model.fit(X)
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            dt = time.perf_counter() - t0
        best = min(best, dt / model.n_iter_)
    return best, model


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument(
        "--threads", type=int, default=None, help="BLAS/torch threads for both (default: as is)"
    )
    args = ap.parse_args(argv)
    if args.threads is not None:  # same thread count for numpy's BLAS and torch
        from threadpoolctl import threadpool_limits

        threadpool_limits(args.threads)
        torch.set_num_threads(args.threads)

    ds = prepare(
        "mnist5k", {"source": "mnist5k", "preprocess": {"scale": "minmax", "resize": [16, 16]}}
    )
    X = ds.X.astype(np.float64)
    K, reg = args.k, 1e-3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        init = GaussianMixture(
            K, covariance_type="full", reg_covar=reg, max_iter=1, random_state=0
        ).fit(X)
    w, m, c = init.weights_, init.means_, init.covariances_
    prec = np.linalg.inv(c)
    print(
        f"data: mnist5k 16x16, X {X.shape}, K={K}, full covariance, float64, "
        f"reg_covar={reg}, {args.iters} iterations, best of {args.repeats}"
    )
    print(f"torch {torch.__version__}, threads={torch.get_num_threads()}")

    def sk():
        return GaussianMixture(
            K,
            covariance_type="full",
            reg_covar=reg,
            max_iter=args.iters,
            tol=0,
            weights_init=w,
            means_init=m,
            precisions_init=prec,
        )

    def ours(device):
        return lambda: GaussianMixtureEM(
            K,
            covariance_type="full",
            reg="ridge",
            reg_covar=reg,
            max_iter=args.iters,
            tol=0,
            weights_init=w,
            means_init=m,
            covariances_init=c,
            device=device,
        )

    t_sk, m_sk = _time_fit(sk, X, args.repeats)
    t_ours, m_ours = _time_fit(ours("cpu"), X, args.repeats)
    diff = np.abs(np.array(m_sk.lower_bounds_) - np.array(m_ours.lower_bounds_)).max()
    print(f"sklearn GaussianMixture : {1e3 * t_sk:8.1f} ms/iter")
    print(f"GaussianMixtureEM (cpu) : {1e3 * t_ours:8.1f} ms/iter")
    print(f"ratio sklearn/ours (cpu): {t_sk / t_ours:8.2f}")
    print(f"max |lower bound difference| over iterations: {diff:.2e}")
    if torch.cuda.is_available():
        t_gpu, _ = _time_fit(ours("cuda"), X, args.repeats)
        print(
            f"GaussianMixtureEM (cuda, {torch.cuda.get_device_name()}): "
            f"{1e3 * t_gpu:8.1f} ms/iter, ratio sklearn/ours: {t_sk / t_gpu:.1f}"
        )
    else:
        print("CUDA not available: no GPU figure")


if __name__ == "__main__":
    main()
