"""Initialisation features on mnist5k: raw pixels, PCA, wavelet scattering (+ PCA), and MixMate
trained from the best of them (issue 3).

Stage 1 runs ``mixlib.init.initialize`` (the pipeline's init stage) for every config of
``CONFIGS`` and prints INIT ACC/NMI on the labelled points (the subset), mean +- std over the
seeds. Scattering features of a subset are computed once per (seed, J) and shared by the
configs (a memo around ``mixlib.init.scattering_features``; the transform is deterministic).

Stage 2 trains MixMate (the pipeline's settings: K=10, 50 atoms, T=15, lambda 0.75) on all
5,000 images from the labels of the configs named by ``--mixmate`` (default: the best two of
stage 1 by mean INIT ACC) and prints the untrained model's INIT ACC/NMI and the TRAIN ACC/NMI
after each of ``--epochs`` (one run to the largest, read at every epoch asked for: MixMate has no
schedule depending on ``n_epochs``, so epoch e of a longer run is the e-epoch model).

    .venv/bin/python benchmarks/init_features.py                    # everything (~15 min, 2 CPUs)
    .venv/bin/python benchmarks/init_features.py --no-mixmate       # stage 1 only (~8 min)
    .venv/bin/python benchmarks/init_features.py --only spectral-raw \
        --mixmate spectral-scat3-std-pca100-all spectral-scat3-std-pca100    # the recommended ones
"""

from __future__ import annotations

import argparse
import hashlib
import time

import numpy as np

from mixlib import init as initlib
from mixlib.data import prepare
from mixlib.metrics import cluster_metrics

# name: keyword arguments of mixlib.init.initialize (seed and image_shape added; subset from
# --subset unless the entry sets it, None = all 5,000 images)
CONFIGS = {
    "kmeans-raw": dict(method="kmeans", feature="raw"),
    "kmeans-scat3-pca100": dict(method="kmeans", feature="scattering", pca_components=100),
    "spectral-raw": dict(method="spectral", feature="raw"),
    "spectral-pca50": dict(method="spectral", feature="pca", pca_components=50),
    "spectral-scat3": dict(method="spectral", feature="scattering", pca_components=None),
    "spectral-scat3-pca100": dict(method="spectral", feature="scattering", pca_components=100),
    "spectral-scat3-pca500": dict(method="spectral", feature="scattering", pca_components=500),
    "spectral-scat3-pca100-nn5": dict(
        method="spectral", feature="scattering", pca_components=100, n_neighbors=5
    ),
    "spectral-scat2-pca100": dict(
        method="spectral", feature="scattering", pca_components=100, scattering_J=2
    ),
    "spectral-scat3-pca100-all": dict(
        method="spectral", feature="scattering", pca_components=100, subset=None
    ),
    "spectral-scat3-std-pca100": dict(
        method="spectral", feature="scattering", pca_components=100, standardize=True
    ),
    "spectral-scat3-std-pca100-all": dict(
        method="spectral", feature="scattering", pca_components=100, standardize=True, subset=None
    ),
    "ssc-raw": dict(method="ssc", feature="raw"),
    "ssc-raw-nz3": dict(method="ssc", feature="raw", n_nonzero=3),
    "ssc-pca50": dict(method="ssc", feature="pca", pca_components=50),
    "ssc-scat3": dict(method="ssc", feature="scattering", pca_components=None),
    "ssc-scat3-pca100": dict(method="ssc", feature="scattering", pca_components=100),
    "ssc-scat3-pca500": dict(method="ssc", feature="scattering", pca_components=500),
    "ssc-scat3-pca500-nz10": dict(
        method="ssc", feature="scattering", pca_components=500, n_nonzero=10
    ),
    "ssc-scat3-std-pca500": dict(
        method="ssc", feature="scattering", pca_components=500, standardize=True
    ),
    "ssc-scat3-pca500-all": dict(
        method="ssc", feature="scattering", pca_components=500, subset=None
    ),
}

_memo: dict = {}
_scattering = initlib.scattering_features


def _cached_scattering(X, image_shape, *, J=3, **kw):
    key = (hashlib.sha1(np.ascontiguousarray(X).tobytes()).hexdigest(), tuple(image_shape), J)
    if key not in _memo:
        _memo[key] = _scattering(X, image_shape, J=J, **kw)
    return _memo[key]


def _fmt(v):
    v = np.asarray(v, dtype=float)
    return f"{v.mean():.3f} ± {v.std():.3f}"


def run_inits(X, y, shape, names, seeds, subset):
    initlib.scattering_features = _cached_scattering
    rows, labels = [], {}
    print(
        f"\n## INIT on mnist5k, subset {subset}, seeds {seeds} (metrics on the labelled points)\n"
    )
    print(f"| {'config':<26} | INIT ACC        | INIT NMI        | s/seed |")
    print(f"|{'-' * 28}|-----------------|-----------------|--------|")
    for name in names:
        acc, nmi, secs = [], [], []
        for seed in seeds:
            t0 = time.perf_counter()
            kw = {"subset": subset, **CONFIGS[name]}
            lab, _ = initlib.initialize(X, 10, seed=seed, image_shape=shape, **kw)
            secs.append(time.perf_counter() - t0)
            seen = lab >= 0
            m = cluster_metrics(y[seen], lab[seen])
            acc.append(m["acc"])
            nmi.append(m["nmi"])
            labels[name, seed] = lab
        rows.append((name, float(np.mean(acc))))
        print(f"| {name:<26} | {_fmt(acc)} | {_fmt(nmi)} | {np.mean(secs):6.1f} |", flush=True)
    print("\n(s/seed includes the scattering transform only the first time a subset meets a J)")
    return rows, labels


def run_mixmate(X, y, labels, names, seeds, epochs, device):
    from mixlib.models import build_model

    E = max(epochs)
    print(f"\n## MixMate (50 atoms, T=15, lambda 0.75) on all {len(y)} images, device {device}\n")
    cols = " | ".join(f"TRAIN ACC E={e:<3}    | TRAIN NMI E={e:<3}   " for e in epochs)
    print(f"| {'init config':<26} | INIT ACC        | INIT NMI        | {cols} | s/run |")
    print("|" + "|".join(["-" * 28] + ["-" * 17] * (2 + 2 * len(epochs)) + ["-------"]) + "|")
    for name in names:
        res = {"acc0": [], "nmi0": [], **{f"{k}{e}": [] for e in epochs for k in ("acc", "nmi")}}
        secs = []
        for seed in seeds:
            model = build_model(
                "mixmate",
                n_clusters=10,
                random_state=seed,
                n_atoms=50,
                n_layers=15,
                lam=0.75,
                n_epochs=E,
                device=device,
            )
            t0 = time.perf_counter()
            model.fit(X, y, init_labels=labels[name, seed])
            secs.append(time.perf_counter() - t0)
            m0 = cluster_metrics(y, model.init_labels_)
            res["acc0"].append(m0["acc"])
            res["nmi0"].append(m0["nmi"])
            for e in epochs:
                res[f"acc{e}"].append(model.history_["acc"][e - 1])
                res[f"nmi{e}"].append(model.history_["nmi"][e - 1])
            mE = cluster_metrics(y, model.labels_)  # the history's last epoch, checked
            assert abs(mE["acc"] - model.history_["acc"][-1]) < 1e-12
        cells = " | ".join(f"{_fmt(res[f'acc{e}'])} | {_fmt(res[f'nmi{e}'])}" for e in epochs)
        print(
            f"| {name:<26} | {_fmt(res['acc0'])} | {_fmt(res['nmi0'])} | {cells} "
            f"| {np.mean(secs):5.0f} |",
            flush=True,
        )


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--subset", type=int, default=2000)
    p.add_argument("--only", nargs="+", choices=list(CONFIGS), help="init configs to run")
    p.add_argument("--mixmate", nargs="*", choices=list(CONFIGS), help="configs to train from")
    p.add_argument("--n-best", type=int, default=2, help="without --mixmate: train from the best")
    p.add_argument("--no-mixmate", action="store_true")
    p.add_argument("--epochs", type=int, nargs="+", default=[5, 20])
    p.add_argument("--mixmate-seeds", type=int, nargs="+", help="default: --seeds")
    p.add_argument("--device", default="auto")
    a = p.parse_args()
    d = prepare("mnist5k", {"source": "mnist5k", "preprocess": {"scale": "minmax"}})
    X, y = d.X, np.asarray(d.y)
    names = a.only or list(CONFIGS)
    if a.mixmate:
        names = list(dict.fromkeys([*names, *a.mixmate]))
    rows, labels = run_inits(X, y, d.image_shape, names, a.seeds, a.subset)
    if a.no_mixmate:
        return
    best = a.mixmate or [n for n, _ in sorted(rows, key=lambda r: -r[1])[: a.n_best]]
    seeds = a.mixmate_seeds or a.seeds
    if not set(seeds) <= set(a.seeds):
        p.error("--mixmate-seeds must be among --seeds")
    run_mixmate(X, y, labels, best, seeds, sorted(a.epochs), a.device)


if __name__ == "__main__":
    main()
