"""Speed, memory and quality benchmarks of MixMate (mixlib/models/mixmate.py) on mnist5k.

    python benchmarks/bench_mixmate.py [--n 5000] [--threads N] [--device auto]
    python benchmarks/bench_mixmate.py --memory            # + peak RSS, 10k vs 70k images
    python benchmarks/bench_mixmate.py --quality --epochs 20 --seeds 0 1 2

Prints, measured in one run on the same data with the MNIST defaults (K=10, N=50, T=15, batch
256): (1) the large-matmul FLOP rate, (2) training throughput (forward + backward + Adam step) of
the fast (Gram) and the direct path and their ratio, (3) the direct forward's achieved FLOP rate
(4 K N M flops per sample and layer) over the matmul rate, (4) evaluation throughput (whole data
set, no grad, large batches) fast vs direct, (5) optionally peak RSS for 10k vs 70k images.
``--quality`` runs k-means init (n_init=10) + training for a few seeds: INIT vs TRAIN metrics.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time

import numpy as np
import torch

from mixlib.data import prepare
from mixlib.metrics import ari, clustering_accuracy, nmi
from mixlib.models.mixmate import MixMate, dictionaries_from_labels, encode, train_step
from mixlib.utils import resolve_device

K, N, T, M, BATCH = 10, 50, 15, 784, 256


def _sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def _timeit(fn, dev, min_time=2.0, min_reps=3):
    """Fastest seconds per call after one warm-up call (the minimum is the least disturbed by
    other processes on a shared machine)."""
    return _compare([fn], dev, min_time, min_reps)[0]


def _compare(fns, dev, min_time=2.0, min_reps=3):
    """Fastest seconds per call of each function, timed in alternation so that all of them see
    the same background load."""
    for fn in fns:
        fn()
    _sync(dev)
    times = [[] for _ in fns]
    start = time.perf_counter()
    while len(times[0]) < min_reps or time.perf_counter() - start < min_time * len(fns):
        for fn, ts in zip(fns, times, strict=True):
            t0 = time.perf_counter()
            fn()
            _sync(dev)
            ts.append(time.perf_counter() - t0)
    return [float(np.min(ts)) for ts in times]


def load(n):
    d = prepare("mnist5k", {"source": "mnist5k", "preprocess": {"scale": "minmax"}})
    X, y = d.X, np.asarray(d.y)
    reps = -(-n // len(X))
    return np.tile(X, (reps, 1))[:n], np.tile(y, reps)[:n]


def speed(args):
    dev = resolve_device(args.device)
    X, y = load(args.n)
    print(f"device={dev} threads={torch.get_num_threads()} n={len(X)} K={K} N={N} T={T} B={BATCH}")
    Xt = torch.as_tensor(X, device=dev)
    D = dictionaries_from_labels(X, y.astype(np.int64), K, N, np.random.default_rng(0))

    # (1) large matmul
    a = torch.randn(2048, 2048, device=dev)
    b = torch.randn(2048, 2048, device=dev)
    mm = 2 * 2048**3 / _timeit(lambda: a @ b, dev)
    print(f"(1) matmul 2048^2 float32: {mm / 1e9:.1f} GFLOP/s")

    # (2) training throughput
    rng = np.random.default_rng(0)
    idx = torch.as_tensor(rng.permutation(len(X)), device=dev)
    steps = []
    for fast in (True, False):
        A = torch.nn.Parameter(torch.as_tensor(D, dtype=torch.float32, device=dev))
        bias = torch.nn.Parameter(torch.zeros(K, device=dev), requires_grad=False)
        opt = torch.optim.Adam([A], lr=1e-3)
        batches = [idx[i : i + BATCH] for i in range(0, len(X) - BATCH + 1, BATCH)]
        it = iter(range(10**9))

        def step(A=A, bias=bias, opt=opt, batches=batches, it=it, fast=fast):
            bi = batches[next(it) % len(batches)]
            train_step(Xt[bi], A, bias, opt, 0.75, 0.04, T, 0.0, None, fast)

        steps.append(step)
    t_fast, t_direct = _compare(steps, dev, min_time=args.min_time)
    tput = {True: BATCH / t_fast, False: BATCH / t_direct}
    print(
        f"(2) training samples/s: fast {tput[True]:.0f}  direct {tput[False]:.0f}  "
        f"ratio {tput[True] / tput[False]:.2f}  (target >= 5)"
    )

    # (3) direct forward FLOP rate
    A0 = torch.as_tensor(D, dtype=torch.float32, device=dev)
    Yb = Xt[idx[:BATCH]]

    def fwd_direct():
        with torch.inference_mode():
            encode(Yb, A0, 0.75, 0.04, T, None, False)

    t_fwd = _timeit(fwd_direct, dev, min_time=args.min_time)
    flops = 4 * K * N * M * T * BATCH / t_fwd
    print(
        f"(3) direct forward: {flops / 1e9:.1f} GFLOP/s = {flops / mm:.2f} of matmul rate "
        f"(aim >= 0.5)"
    )

    # (4) evaluation throughput over the whole data set
    for bs in (None, 4096):
        runs = []
        for fast in (True, False):
            m = MixMate(fast=fast, device=str(dev), eval_batch_size=bs)

            def run(m=m):
                m._evaluate(Xt, None, A0, torch.zeros(K, device=dev))

            runs.append(run)
        t_fast, t_direct = _compare(runs, dev, min_time=args.min_time, min_reps=2)
        print(
            f"(4) evaluation samples/s (eval batch {m._eval_batch()}"
            f"{' = default' if bs is None else ''}): fast {len(X) / t_fast:.0f}"
            f"  direct {len(X) / t_direct:.0f}  ratio {t_direct / t_fast:.2f}  (target >= 5)"
        )


def _rss_child(path, device):
    """Peak RSS (MiB) of: loading the data (.npz), then a 1-epoch fit (fast path) and predict."""
    d = np.load(path)
    X, lab = d["X"], d["y"].astype(np.int64)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    MixMate(n_epochs=1, device=device, random_state=0).fit(X, init_labels=lab).predict(X)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{base:.0f} {peak:.0f} {X.nbytes / 2**20:.0f}")


def memory(args):
    import tempfile

    print("(5) peak RSS of a fresh process, 1-epoch fit + predict (fast path):")
    with tempfile.TemporaryDirectory() as tmp:
        for n in (10_000, 70_000):
            X, y = load(n)
            path = f"{tmp}/x{n}.npz"
            np.savez(path, X=X, y=y)
            out = subprocess.run(
                [sys.executable, __file__, "--rss-child", path, "--device", args.device],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.split()
            base, peak, data = (float(v) for v in out[-3:])
            print(
                f"    n={n}: data {data:.0f} MiB, RSS after imports + loading {base:.0f} MiB,"
                f" peak {peak:.0f} MiB, peak - loaded = {peak - base:.0f} MiB"
            )


def quality(args):
    from sklearn.cluster import KMeans

    X, y = load(5000)
    rows = []
    for seed in args.seeds:
        t0 = time.perf_counter()
        km = KMeans(10, n_init=10, random_state=seed).fit(X).labels_.astype(np.int64)
        m = MixMate(n_epochs=args.epochs, random_state=seed, device=args.device, **args.params)
        m.fit(X, y=y, init_labels=km)
        r = [seed, clustering_accuracy(y, km)]
        for lab in (m.init_labels_, m.labels_):
            r += [clustering_accuracy(y, lab), nmi(y, lab), ari(y, lab)]
        rows.append(r)
        print(
            f"seed {seed}: kmeans ACC {r[1]:.3f} | INIT ACC {r[2]:.3f} NMI {r[3]:.3f}"
            f" ARI {r[4]:.3f} | TRAIN ACC {r[5]:.3f} NMI {r[6]:.3f} ARI {r[7]:.3f}"
            f" | loss {m.init_loss_:.4f} -> {m.loss_:.4f} | {time.perf_counter() - t0:.0f}s",
            flush=True,
        )
        print("    acc per epoch:", " ".join(f"{a:.3f}" for a in m.history_["acc"]), flush=True)
    R = np.array(rows)
    mu, sd = R.mean(0), R.std(0)
    names = [
        "kmeans ACC",
        "INIT ACC",
        "INIT NMI",
        "INIT ARI",
        "TRAIN ACC",
        "TRAIN NMI",
        "TRAIN ARI",
    ]
    print(
        "mean +- sd over seeds:",
        ", ".join(f"{n} {mu[i + 1]:.3f}+-{sd[i + 1]:.3f}" for i, n in enumerate(names)),
    )


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--n", type=int, default=5000, help="images (mnist5k tiled)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all)")
    p.add_argument("--device", default="auto")
    p.add_argument("--min-time", type=float, default=2.0, help="seconds per timing")
    p.add_argument("--memory", action="store_true", help="also measure peak RSS, 10k vs 70k")
    p.add_argument("--memory-only", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--quality", action="store_true", help="k-means init + training, INIT vs TRAIN")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--param", action="append", default=[], help="MixMate key=value (quality)")
    p.add_argument("--rss-child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)  # the driver owns the thread count, not the library
    args.params = {}
    for kv in args.param:
        k, v = kv.split("=", 1)
        args.params[k] = {"True": True, "False": False}.get(v, v)
        if isinstance(args.params[k], str):
            try:
                args.params[k] = float(v) if any(c in v for c in ".e") else int(v)
            except ValueError:
                pass
    if args.rss_child:
        _rss_child(args.rss_child, args.device)
    elif args.quality:
        quality(args)
    elif args.memory_only:
        memory(args)
    else:
        speed(args)
        if args.memory:
            memory(args)


if __name__ == "__main__":
    main()
