"""The hot loops on a GPU against the same code on the CPU, on the same data, in the same run.

    python benchmarks/bench_gpu.py [--threads 2] [--raw-dir ../shared/data] [--n N]
        [--devices cuda cpu] [--parts mixmate dpkm em gmm16 init] [--cpu-init-n N]

Every part runs a model's public ``fit`` (the code the workflow runs) once per device and times
the interval between consecutive ``callback`` calls (an epoch or an iteration), the first one
left out (warm-up, allocation), with the device synchronised before every time stamp; the
part's time is the fastest interval. Parts:

- ``mixmate``: MixMate with the paper's MNIST settings (K = 10, 50 atoms, T = 15, lam = 0.75,
  batch 256), dictionaries from the true labels, 3 epochs on all images; an interval is an
  epoch plus its evaluation pass (the callback asks for the labels, as the workflow's monitor
  does); the evaluation alone is timed inside the callback.
- ``dpkm``: deep power k-means (784-500-500-2000-10), 2 pre-training epochs (timed as one
  interval), then 3 joint epochs.
- ``em``: BigLearn-EM (12 outer iterations, float64) and Joint-EM (``GaussianMixtureEM``,
  ``reg="floor"``, 8 iterations from a k-means start) on Letter (20,000 x 16, K = 26),
  min-max scaled per feature.
- ``gmm16``: ``GaussianMixtureEM`` on all MNIST images at 16 x 16 (70,000 x 256, K = 10,
  ``reg="floor"``, 4 iterations from a k-means start): the GMM exercise.
- ``init``: Table 1's ``knn_spectral`` init step by step (``mixlib.init``): scattering (J = 3)
  and the kNN graph on the device, PCA to 500 and the spectral step on the CPU (they have no
  device path); ``--cpu-init-n`` limits the CPU run to the first N images.
- ``scattering_batch`` (not in the default list): the scattering step alone at batch sizes
  256, 1024 and 4096, with the largest difference of the features from batch 256's.

Each device runs with ``--threads`` CPU threads (a laptop's cores beside its GPU). The FLOP
rates of MixMate and deep power k-means are counted as in bench_mixmate_epoch.py and
bench_dpkm.py and given as a fraction of a 4096^3 float32 matmul on the same device (on CUDA
without TF32, as the models run). Agreement of the devices: the adjusted Rand index of their
labels after the same fit, and for the EM parts the largest relative difference of their
log-likelihoods. Lines are printed (and flushed) as each part ends, so a run cut short keeps
what it measured; all CUDA parts run before the CPU ones.
"""

from __future__ import annotations

import argparse
import time
import traceback
import warnings

import numpy as np
import torch
from baseline import REPO, autoencoder_flops_per_sample, matmul_rate, mnist_or_mnist5k
from bench_mixmate_epoch import BATCH, forward_flops
from sklearn.metrics import adjusted_rand_score

from mixlib import init
from mixlib.models.biglearn import BigLearnEM
from mixlib.models.gmm_em import GaussianMixtureEM
from mixlib.models.mixmate import MixMate
from mixlib.models.power_kmeans import DeepPowerKMeans

DEFAULT_PARTS = ["mixmate", "dpkm", "em", "gmm16", "init"]


def say(*a):
    print(*a, flush=True)


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


class Stamps:
    """A ``callback`` that stamps the time of each call (device synchronised first), with the
    names of the step's metrics, optionally running ``extra(progress)`` (timed) before."""

    def __init__(self, device: str, extra=None):
        self.device, self.extra = device, extra
        self.t, self.extra_s, self.values = [], [], []

    def __call__(self, progress):
        if self.extra is not None:
            sync(self.device)
            t0 = time.perf_counter()
            self.extra(progress)
            sync(self.device)
            self.extra_s.append(time.perf_counter() - t0)
        sync(self.device)
        self.t.append(time.perf_counter())
        self.values.append(dict(progress.metrics))

    def series(self, key: str) -> np.ndarray:
        return np.asarray([v[key] for v in self.values if key in v])

    def fastest(self, key: str | None = None) -> float:
        """The shortest interval between consecutive calls whose metrics both hold ``key``
        (any call when None), the first interval of each run of such calls left out."""
        sel = [i for i, v in enumerate(self.values) if key is None or key in v]
        gaps = [self.t[j] - self.t[i] for i, j in zip(sel, sel[1:]) if j == i + 1]
        return float(min(gaps[1:] if len(gaps) > 1 else gaps))


# --- parts: each returns (lines, labels or None, log-likelihoods or None) ---------------------


def part_mixmate(X, y, device, rate):
    st = Stamps(device, extra=lambda p: p.labels())  # the evaluation pass, as the monitor asks
    m = MixMate(n_epochs=3, device=device, random_state=0, flush_denormal=True)
    m.fit(X, init_labels=y, callback=st)
    both = st.fastest()
    ev = float(min(st.extra_s[1:]))
    n, M = X.shape
    f_ev = forward_flops(n, M, m._eval_batch())
    f_ep = 3 * forward_flops((n // BATCH) * BATCH, M, BATCH)
    lines = [
        f"mixmate   epoch + evaluation {both:8.2f} s  {(f_ep + f_ev) / both / 1e9:9.1f} GFLOP/s"
        f" ({(f_ep + f_ev) / both / rate:.2f} of matmul)",
        f"mixmate   evaluation alone   {ev:8.2f} s  {f_ev / ev / 1e9:9.1f} GFLOP/s"
        f" ({f_ev / ev / rate:.2f} of matmul)",
    ]
    return lines, m.labels_, None


def part_dpkm(X, device, rate):
    st = Stamps(device)
    m = DeepPowerKMeans(
        pretrain_epochs=2, n_rounds=1, epochs_per_s=3, device=device, random_state=0
    )
    m.fit(X, callback=st)
    ep = st.fastest("loss")
    f = autoencoder_flops_per_sample(X.shape[1]) * (X.shape[0] // 250) * 250
    line = (
        f"dpkm      joint epoch        {ep:8.2f} s  {f / ep / 1e9:9.1f} GFLOP/s"
        f" ({f / ep / rate:.2f} of matmul)  200 epochs: {200 * ep / 60:.1f} min"
    )
    return [line], m.labels_, None


def part_em(X, K, device):
    lines, labels, lls = [], [], []
    st = Stamps(device)
    bl = BigLearnEM(n_clusters=K, n_iter=12, random_state=0, device=device).fit(X, callback=st)
    lines.append(f"em        BigLearn-EM outer iteration {1e3 * st.fastest():9.1f} ms (Letter)")
    labels.append(bl.labels_)
    lls.append(st.series("loglik"))
    gm, st = _joint_em(X, K, 8, device)
    lines.append(f"em        Joint-EM iteration          {1e3 * st.fastest():9.1f} ms (Letter)")
    labels.append(gm.labels_)
    lls.append(st.series("loglik"))
    return lines, labels, lls


def _joint_em(X, K, n_iter, device):
    """(model, stamps) of ``n_iter`` iterations of ``GaussianMixtureEM(reg="floor")`` from its
    k-means start."""
    st = Stamps(device)
    gm = GaussianMixtureEM(
        n_clusters=K, reg="floor", reg_covar=1e-5, max_iter=n_iter, tol=0, random_state=0,
        device=device,
    )  # fmt: skip
    return gm.fit(X, callback=st), st


def part_gmm16(X, device):
    gm, st = _joint_em(X, 10, 4, device)
    line = f"gmm16     GMM iteration ({X.shape[0]} x {X.shape[1]}) {1e3 * st.fastest():9.1f} ms"
    return [line], gm.labels_, st.series("loglik")


def part_init(X, shape, device):
    t = {}
    t0 = time.perf_counter()
    F = init.scattering_features(X, shape, J=3, device=device)
    sync(device)
    t["scattering"], t0 = time.perf_counter() - t0, time.perf_counter()
    P = init.pca_project(F, 500)
    t["PCA (CPU)"], t0 = time.perf_counter() - t0, time.perf_counter()
    W = init.knn_graph(P, 10, device=device)
    sync(device)
    t["kNN graph"], t0 = time.perf_counter() - t0, time.perf_counter()
    lab = init.spectral_labels(W, 10, seed=0)
    t["spectral (CPU)"] = time.perf_counter() - t0
    lines = [f"init      {k:<16} {v:8.2f} s" for k, v in t.items()]
    lines.append(f"init      total            {sum(t.values()):8.2f} s  ({len(X)} images)")
    return lines, lab, None


def part_scattering_batch(X, shape, device, batches=(256, 1024, 4096)):
    """The scattering step alone at several batch sizes: its time and the largest absolute
    difference of its features from those of the first batch size."""
    lines, ref = [], None
    for b in batches:
        sync(device)
        t0 = time.perf_counter()
        F = init.scattering_features(X, shape, J=3, batch_size=b, device=device)
        sync(device)
        dt = time.perf_counter() - t0
        ref = F if ref is None else ref
        lines.append(
            f"scatter   batch {b:5d}      {dt:8.2f} s  max |diff| from batch {batches[0]}:"
            f" {float(np.abs(F - ref).max()):.1e}  ({len(X)} images)"
        )
    return lines, None, None


def run_part(part, device, X, y, shape, n, rates, data, args):
    from bench_em_iterations import load_mnist16, load_tabular

    if part == "mixmate":
        return part_mixmate(X, y, device, rates[device])
    if part == "dpkm":
        return part_dpkm(X, device, rates[device])
    if part == "em":
        if "letter" not in data:
            data["letter"] = load_tabular("letter", args.raw_dir)
        return part_em(*data["letter"], device)
    if part == "gmm16":
        if "gmm16" not in data:
            data["gmm16"] = load_mnist16(args.raw_dir)[0][:n]
        return part_gmm16(data["gmm16"], device)
    if part == "init":
        m = min(args.cpu_init_n or n, n)
        if device == "cpu" or m == n:
            return part_init(X[:m], shape, device)
        # all images, then the CPU's subset for the agreement
        lines = part_init(X, shape, device)[0]
        res = part_init(X[:m], shape, device)
        return (lines + res[0], *res[1:])
    if part == "scattering_batch":
        return part_scattering_batch(X, shape, device)
    raise ValueError(f"unknown part {part!r}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--raw-dir", default=str(REPO.parent / "shared" / "data"))
    ap.add_argument("--n", type=int, default=None, help="use the first n images only")
    ap.add_argument("--devices", nargs="+", default=["cuda", "cpu"])
    ap.add_argument(
        "--parts", nargs="+", choices=[*DEFAULT_PARTS, "scattering_batch"], default=DEFAULT_PARTS
    )
    ap.add_argument("--cpu-init-n", type=int, default=None, help="CPU init on the first N only")
    args = ap.parse_args(argv)
    t_start = time.perf_counter()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")  # the EM fits stop at max_iter on purpose (tol=0)
    if "cuda" in args.devices and not torch.cuda.is_available():
        ap.error("--devices names cuda but torch sees no CUDA device")
    ds = mnist_or_mnist5k(args.raw_dir)
    n = args.n or len(ds.X)
    X, y, shape = ds.X[:n], ds.y[:n], tuple(ds.meta["image_shape"])
    card = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
    say(
        f"torch {torch.__version__}, threads={args.threads}, {X.shape[0]} x {X.shape[1]}"
        f" images, GPU: {card}"
    )
    rates = {
        d: matmul_rate(torch.randn(4096, 4096, device=d), torch.randn(4096, 4096, device=d), 5)
        for d in args.devices
    }
    torch.backends.cuda.matmul.allow_tf32 = False  # as the models run
    say(
        "4096^3 float32 matmul: "
        + ", ".join(f"{d} {r / 1e9:.1f} GFLOP/s" for d, r in rates.items())
    )
    data = {}
    out = {}
    for device in args.devices:
        for part in args.parts:
            t0 = time.perf_counter()
            try:
                res = run_part(part, device, X, y, shape, n, rates, data, args)
            except Exception:  # one part's failure must not cost the others' measurements
                say(f"{device:<5} {part} FAILED:\n{traceback.format_exc()}")
                continue
            out[part, device] = res
            for line in res[0]:
                say(f"{device:<5} {line}")
            say(f"{device:<5} {part} part: {time.perf_counter() - t0:.1f} s wall")
    for part in args.parts:
        if all((part, d) in out for d in ("cpu", "cuda")) and out[part, "cpu"][1] is not None:
            try:
                say(agreement(part, out[part, "cpu"], out[part, "cuda"]))
            except Exception:
                say(f"agreement {part} FAILED:\n{traceback.format_exc()}")
    say(f"{time.perf_counter() - t_start:.1f} s wall")


def agreement(part, res_c, res_g) -> str:
    """ARI of the two devices' labels; for the EM parts also the largest relative difference
    of their log-likelihood trajectories."""
    (_, lab_c, ll_c), (_, lab_g, ll_g) = res_c, res_g
    as_list = lambda v: v if isinstance(v, list) else [v]  # noqa: E731
    aris = [adjusted_rand_score(a, b) for a, b in zip(as_list(lab_c), as_list(lab_g), strict=True)]
    msg = f"agreement {part}: ARI(cpu, cuda) " + ", ".join(f"{a:.4f}" for a in aris)
    if ll_c is not None:
        rel = max(
            float(np.max(np.abs(a - b) / np.abs(a)))
            for a, b in zip(as_list(ll_c), as_list(ll_g), strict=True)
        )
        msg += f"; max relative log-likelihood difference {rel:.1e}"
    return msg


if __name__ == "__main__":
    main()
