"""How MixMate's initial dictionaries keep (or lose) the clustering they are built from.

From one set of init labels (the true classes, or labels of an init run of the pipeline) build
MixMate's dictionaries each way of ``dict_init`` and print the three numbers of the Table 1 issue:
the labels' own ACC/NMI, the untrained model's (INIT) and the trained model's (TRAIN) after each
of ``--epochs`` (one run per way, read at each epoch asked for).

    .venv/bin/python benchmarks/mixmate_dictionaries.py --data results/data/mnist.npz \
        --labels results/init/mnist/knn_spectral/seed0/labels.npy --epochs 2 10
    .venv/bin/python benchmarks/mixmate_dictionaries.py --data results/data/mnist.npz --labels true
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from mixlib.data import load_prepared
from mixlib.metrics import cluster_metrics
from mixlib.models import MixMate
from mixlib.models.mixmate import DICT_INITS


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, help="a prepared dataset (results/data/<name>.npz)")
    ap.add_argument("--labels", default="true", help="init labels (.npy, -1 = unseen) or 'true'")
    ap.add_argument("--epochs", type=int, nargs="+", default=[2])
    ap.add_argument("--dict-init", nargs="+", default=list(DICT_INITS), choices=DICT_INITS)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    ds = load_prepared(args.data)
    X, y = ds.X, np.asarray(ds.y)
    labels = y.astype(np.int64) if args.labels == "true" else np.load(args.labels)
    seen = labels >= 0
    r = cluster_metrics(y[seen], labels[seen])
    print(f"labels {args.labels}: ACC {r['acc']:.4f} NMI {r['nmi']:.4f} ({seen.sum()} points)")
    epochs = sorted(set(args.epochs))
    for how in args.dict_init:
        t0 = time.perf_counter()
        m = MixMate(
            n_clusters=ds.meta["n_clusters"], n_epochs=max(epochs), dict_init=how, lr=args.lr,
            random_state=args.seed,
        )  # fmt: skip
        m.fit(X, y, init_labels=labels)
        ri = cluster_metrics(y, m.init_labels_)
        line = f"dict_init={how:9s} lr={args.lr:g}  INIT ACC {ri['acc']:.4f} NMI {ri['nmi']:.4f}"
        for e in epochs:
            line += f" | TRAIN@{e} ACC {m.history_['acc'][e - 1]:.4f} NMI {m.history_['nmi'][e - 1]:.4f}"
        print(line + f"  ({time.perf_counter() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
