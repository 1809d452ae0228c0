"""Every figure of mixlib: tables' figures from the long table (seaborn, sd error bars), the
figures of a fitted model (:func:`model_figures`, picked by the model's kind), and those of the
Gaussian-mixture experiments. Models and stages never draw; they call these."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from .utils import atomic_path  # noqa: E402


def savefig(fig, path: str | Path) -> Path:
    """Save a matplotlib figure atomically (PNG) and close it."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight", format=path.suffix.lstrip(".") or "png")
    plt.close(fig)
    return path


def mosaic(tiles: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(R, C, h*w) images in [0, 1] -> one (R*(h+1)-1, C*(w+1)-1) array, white 1-pixel gaps:
    drawn with a single ``imshow`` (one axes per image costs ~15 ms each in matplotlib)."""
    h, w = shape
    R, C = tiles.shape[:2]
    out = np.ones((R, h + 1, C, w + 1))
    out[:, :h, :, :w] = tiles.reshape(R, C, h, w).transpose(0, 2, 1, 3)
    return out.reshape(R * (h + 1), C * (w + 1))[:-1, :-1]


def metrics_by_method(
    long: pd.DataFrame, dataset: str, path: str | Path, metrics=("nmi", "ari", "acc")
) -> Path:
    """Bar chart of each metric by method (mean over seeds, sd error bars, seeds as dots)."""
    df = long[long.dataset == dataset].melt(
        id_vars=["method", "seed"], value_vars=list(metrics), var_name="metric", value_name="score"
    )
    order = list(dict.fromkeys(df.method))
    import seaborn as sns  # imported here: the training jobs' curves need only matplotlib

    g = sns.catplot(
        data=df,
        x="score",
        y="method",
        col="metric",
        kind="bar",
        errorbar="sd",
        order=order,
        height=0.45 * len(order) + 1.5,
        aspect=1.0,
        sharex=True,
        color="#8fb3d9",
    )
    for ax, metric in zip(g.axes.flat, metrics):
        sns.stripplot(
            data=df[df.metric == metric],
            x="score",
            y="method",
            order=order,
            ax=ax,
            color="k",
            size=3,
        )
        ax.set_xlim(0, 1)
        ax.set_title(metric.upper())
        ax.set_xlabel("")
    g.figure.suptitle(f"{dataset}: mean ± sd over seeds", y=1.02)
    return savefig(g.figure, path)


def curves(history: dict[str, list[float]], path: str | Path, title: str = "") -> Path | None:
    """One panel per curve of a model's ``history_``."""
    keys = [k for k, v in history.items() if len(v) > 1]
    if not keys:
        return None
    fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 2.6), squeeze=False)
    for ax, k in zip(axes[0], keys):
        ax.plot(range(1, len(history[k]) + 1), history[k])
        ax.set_title(k)
        ax.set_xlabel("step")
    fig.suptitle(title)
    fig.tight_layout()
    return savefig(fig, path)


def metrics_vs_value(
    long: pd.DataFrame,
    param: str,
    path: str | Path,
    title: str = "",
    metrics=("nmi", "ari", "acc"),
) -> Path:
    """One panel per metric against a swept hyperparameter: mean over seeds with sd error bars,
    one line per method. ``long`` needs ``value`` and ``method`` columns (a sweep's records)."""
    df = long.melt(
        id_vars=["method", "value", "seed"],
        value_vars=list(metrics),
        var_name="metric",
        value_name="score",
    )
    df["metric"] = df["metric"].str.upper()
    import seaborn as sns

    g = sns.relplot(
        data=df,
        x="value",
        y="score",
        hue="method",
        col="metric",
        kind="line",
        errorbar="sd",
        marker="o",
        err_style="bars",
        height=3.0,
        aspect=1.1,
    )
    g.set_axis_labels(param, "score")
    g.set_titles("{col_name}")
    if title:
        g.figure.suptitle(title, y=1.04)
    return savefig(g.figure, path)


# --- figures of a fitted model, by kind ------------------------------------------------------


def model_figures(model, X, outdir: str | Path, image_shape=()) -> list[Path]:
    """The figures of a fitted model (PNG files in ``outdir``), picked by its ``kind``: MixMate's
    atoms, reconstructions and curves; deep power k-means' losses per round and embedding; DEC's
    and IDEC's curves and embedding; N2D's reconstruction curve and clusters on a 2-D UMAP map;
    a Gaussian mixture's log-likelihood curve, means and samples (image data); for any other
    kind its ``history_`` curves. ``X`` are the rows it was fitted on, ``image_shape`` e.g.
    (28, 28) for images, () otherwise."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    draw = _MODEL_FIGURES.get(getattr(model, "kind", None))
    if draw is None:
        title = f"{getattr(model, 'kind', type(model).__name__)} seed {model.random_state}"
        paths = [curves(getattr(model, "history_", {}), outdir / "curves.png", title=title)]
    else:
        paths = draw(model, np.asarray(X), outdir, tuple(image_shape or ()))
    return [p for p in paths if p is not None]


def _mixmate_figures(model, X, outdir: Path, image_shape) -> list[Path]:
    """``atoms.png``, ``reconstructions.png`` and ``curves.png``. With ``image_shape`` atoms are
    drawn as images, one row per dictionary, and reconstructions as an image grid (row 0:
    inputs, row k+1: dictionary k); otherwise each dictionary is a heat map and reconstructions
    are line plots."""
    from matplotlib.figure import Figure  # Agg canvas, no pyplot global state

    D = model.dictionaries_  # (K, M, N)
    K, M, N = D.shape
    shape = image_shape or None
    if shape is not None and int(np.prod(shape)) != M:
        raise ValueError(f"image_shape {shape} does not have {M} pixels")
    paths = []

    # atoms
    if shape is not None:
        # one mosaic (K rows of N atoms, each scaled to its own range, 1-pixel gaps) drawn
        # by a single imshow: K*N separate axes cost seconds per training job
        h, w = shape
        lo = D.min(axis=1, keepdims=True)
        span = np.maximum(D.max(axis=1, keepdims=True) - lo, 1e-12)
        fig = Figure(figsize=(max(4.0, N * 0.3), K * 0.35 + 0.6))
        ax = fig.subplots()
        ax.imshow(mosaic(((D - lo) / span).transpose(0, 2, 1), shape), cmap="gray")
        ax.set_yticks([k * (h + 1) + h / 2 for k in range(K)], [str(k) for k in range(K)])
        ax.set_xticks([])
        ax.set_ylabel("dictionary")
    else:
        fig = Figure(figsize=(2.2 * K, 3))
        axs = fig.subplots(1, K, squeeze=False)
        for k in range(K):
            axs[0, k].imshow(D[k], aspect="auto", cmap="RdBu_r")
            axs[0, k].set_title(f"dictionary {k}", fontsize=8)
    fig.suptitle("MixMate atoms (one row per dictionary)")
    paths.append(outdir / "atoms.png")
    fig.savefig(paths[-1], dpi=80)

    # reconstructions of a few inputs by every dictionary
    Xs = X[:8]
    R = model.reconstruct(Xs)  # (K, b, M)
    n_show = Xs.shape[0]
    if shape is not None:
        rows = np.concatenate([Xs[None], R])  # (K + 1, b, M): inputs, then each dictionary
        lo, hi = float(Xs.min()), float(Xs.max())
        fig = Figure(figsize=(n_show * 0.9, (K + 1) * 0.9))
        ax = fig.subplots()
        ax.imshow(mosaic(np.clip((rows - lo) / max(hi - lo, 1e-12), 0, 1), shape), cmap="gray")
        ax.set_axis_off()
    else:
        fig = Figure(figsize=(3 * n_show, 2.5))
        axs = fig.subplots(1, n_show, squeeze=False)
        for i in range(n_show):
            axs[0, i].plot(Xs[i], "k", lw=2, label="input")
            for k in range(K):
                axs[0, i].plot(R[k, i], lw=0.7)
    fig.suptitle("inputs (top) and reconstructions by each dictionary")
    paths.append(outdir / "reconstructions.png")
    fig.savefig(paths[-1], dpi=80)

    # curves: the training loss, and the scores where the pipeline recorded them
    fig = Figure(figsize=(8, 3))
    ax1, ax2 = fig.subplots(1, 2)
    h = getattr(model, "history_", {})
    ax1.plot(np.arange(1, len(h.get("loss", [])) + 1), h.get("loss", []), "o-")
    ax1.set(xlabel="epoch", ylabel="training loss")
    for key in ("acc", "nmi", "ari"):
        if key in h:
            v = np.asarray(h[key], dtype=float)
            ok = np.isfinite(v)  # epochs without an evaluation (eval_every) are NaN
            ax2.plot(np.arange(1, v.size + 1)[ok], v[ok], "o-", label=key)
    ax2.set(xlabel="epoch", ylabel="metric")
    if any(k in h for k in ("acc", "nmi", "ari")):
        ax2.legend()
    fig.tight_layout()
    paths.append(outdir / "curves.png")
    fig.savefig(paths[-1], dpi=80)
    return paths


def _deep_power_kmeans_figures(model, X, outdir: Path, image_shape) -> list[Path]:
    """``round_losses.png`` (losses per round) and ``embedding.png`` (PCA of the embedding,
    coloured by cluster, representatives as crosses)."""
    from matplotlib.figure import Figure  # Agg canvas, no pyplot global state

    Z = model.transform(X)
    labels = model.predict(X)
    R = model.cluster_centers_
    paths = []

    h = model.history_
    fig = Figure(figsize=(9, 3))
    axs = fig.subplots(1, 3)
    rounds = np.arange(1, len(h["s"]) + 1)
    axs[0].plot(rounds, h["reconstruction"], "o-")
    axs[0].set(xlabel="round (value of s)", ylabel="reconstruction loss")
    axs[1].plot(rounds, h["power_mean"], "o-")
    axs[1].set(xlabel="round (value of s)", ylabel="power-mean loss", yscale="log")
    axs[2].plot(rounds, np.abs(h["s"]), "o-")
    axs[2].set(xlabel="round", ylabel="|s|", yscale="log")
    fig.tight_layout()
    paths.append(outdir / "round_losses.png")
    fig.savefig(paths[-1], dpi=80)
    paths.append(_embedding_pca(Z, labels, R, outdir / "embedding.png"))
    return paths


def _embedding_pca(Z, labels, centres, path: Path) -> Path:
    """PCA of an embedding Z (N, e) coloured by cluster, the centres (K, e) as crosses (centred
    on the data, projected with the same axes)."""
    from matplotlib.figure import Figure  # Agg canvas, no pyplot global state

    mu = Z.mean(0)
    _, _, Vt = np.linalg.svd(Z - mu, full_matrices=False)
    P = Vt[:2].T if Vt.shape[0] >= 2 else np.eye(Z.shape[1], 2)
    Z2, R2 = (Z - mu) @ P, (centres - mu) @ P
    fig = Figure(figsize=(5, 5))
    ax = fig.subplots()
    ax.scatter(Z2[:, 0], Z2[:, 1], c=labels, cmap="tab10", s=4, alpha=0.7)
    ax.scatter(R2[:, 0], R2[:, 1], c="k", marker="x", s=60)
    ax.set(title="embedding (PCA), coloured by cluster", xlabel="PC 1", ylabel="PC 2")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    return path


def _embedded_clustering_figures(model, X, outdir: Path, image_shape) -> list[Path]:
    """DEC, IDEC and DCN: ``curves.png`` (pre-training reconstruction per epoch; KL, label
    changes and, IDEC, reconstruction per update of the target; DCN's losses and label changes
    per epoch) and ``embedding.png`` (PCA of the embedding, coloured by cluster, centres as
    crosses)."""
    title = f"{model.kind} seed {model.random_state}"
    return [
        curves(model.history_, outdir / "curves.png", title=title),
        _embedding_pca(
            model.transform(X), model.predict(X), model.cluster_centers_, outdir / "embedding.png"
        ),
    ]


def _n2d_figures(model, X, outdir: Path, image_shape) -> list[Path]:
    """``curves.png`` (the auto-encoder's reconstruction error per epoch) and ``embedding.png``:
    the mixture's clusters on a 2-D map of the data. The map is the model's own UMAP embedding
    when it has two dimensions; otherwise a 2-D UMAP (the model's neighbours, distance and seed)
    of the auto-encoder embedding of at most 4,000 of the rows, a random subset (below 4,096
    rows umap-learn finds exact neighbours: seconds, no approximate index to compile)."""
    from matplotlib.figure import Figure  # Agg canvas, no pyplot global state

    title = f"n2d seed {model.random_state}"
    paths = [curves(model.history_, outdir / "curves.png", title=title)]
    fitted = X.shape[0] == model.labels_.shape[0]
    if fitted and model.embedding_.shape[1] == 2:
        E2, labels, how = model.embedding_, model.labels_, "UMAP embedding"
    else:
        import umap

        rng = np.random.default_rng(0)
        rows = np.sort(rng.choice(X.shape[0], min(4000, X.shape[0]), replace=False))
        labels = model.labels_[rows] if fitted else model.predict(X[rows])
        E2 = umap.UMAP(
            n_components=2,
            n_neighbors=int(min(model.umap_n_neighbors, rows.size - 1)),
            min_dist=float(model.umap_min_dist),
            metric=model.umap_metric,
            random_state=0 if model.random_state is None else int(model.random_state),
            n_jobs=1,
        ).fit_transform(model.embed(X[rows]))
        how = f"2-D UMAP of the auto-encoder embedding, {rows.size} rows"
    fig = Figure(figsize=(5, 5))
    ax = fig.subplots()
    ax.scatter(E2[:, 0], E2[:, 1], c=labels, cmap="tab10", s=3, alpha=0.6)
    ax.set(title=f"{how}\ncoloured by cluster", xticks=[], yticks=[])
    fig.tight_layout()
    paths.append(outdir / "embedding.png")
    fig.savefig(paths[-1], dpi=80)
    return paths


def _gaussian_mixture_figures(model, X, outdir: Path, image_shape) -> list[Path]:
    """The log-likelihood curve and, for image data, the component means and samples."""
    paths = []
    hist = getattr(model, "history_", {}).get("loglik", [])
    if hist:
        paths.append(plot_curve(hist, outdir / "loglik.png", ylabel="mean log-likelihood"))
    if image_shape:
        paths.append(save_image_grid(model.means_, image_shape, outdir / "means.png"))
        samples, _ = model.sample(min(64, 8 * len(model.weights_)))
        paths.append(save_image_grid(samples, image_shape, outdir / "samples.png"))
    return paths


_MODEL_FIGURES = {
    "mixmate": _mixmate_figures,
    "deep_power_kmeans": _deep_power_kmeans_figures,
    "n2d": _n2d_figures,
    "dec": _embedded_clustering_figures,
    "idec": _embedded_clustering_figures,
    "dcn": _embedded_clustering_figures,
    "gmm_em": _gaussian_mixture_figures,
    "biglearn_em": _gaussian_mixture_figures,
}


# --- Gaussian-mixture experiments -------------------------------------------------------------


def plot_curve(values, path, *, ylabel: str = "value", xlabel: str = "iteration") -> Path:
    """A single curve (e.g. a model's log-likelihood history) as PNG."""
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(np.arange(1, len(values) + 1), values, marker=".")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    return savefig(fig, path)


def save_image_grid(images, image_shape, path, *, ncols: int = 8, title: str | None = None):
    """Images (n, prod(image_shape)) in a grid, each min-max scaled, as PNG (one mosaic)."""
    images = np.asarray(images, dtype=np.float64).reshape(len(images), -1)
    n = len(images)
    ncols = min(ncols, n)
    nrows = int(np.ceil(n / ncols))
    lo, hi = images.min(1, keepdims=True), images.max(1, keepdims=True)
    tiles = np.ones((nrows * ncols, images.shape[1]))  # blank (white) after the last image
    tiles[:n] = (images - lo) / np.maximum(hi - lo, 1e-12)
    fig, ax = plt.subplots(figsize=(ncols * 1.0, nrows * 1.0))
    ax.imshow(mosaic(tiles.reshape(nrows, ncols, -1), tuple(image_shape)), cmap="gray")
    ax.axis("off")
    if title:
        ax.set_title(title)
    return savefig(fig, path)


def _lines_per_seed(df: pd.DataFrame, y: str, hue: str, alpha: float):
    """One line per seed of ``y`` against ``iteration``, coloured by ``hue`` (seaborn)."""
    import seaborn as sns

    fig, ax = plt.subplots(figsize=(6, 4))
    sns.lineplot(
        data=df, x="iteration", y=y, hue=hue, units="seed", estimator=None, ax=ax, alpha=alpha
    )
    return fig, ax


def plot_loglik_curves(df: pd.DataFrame, path) -> Path:
    """Log-likelihood per iteration, one line per seed, coloured by init."""
    fig, ax = _lines_per_seed(df, "loglik", "init", 0.8)
    ax.set_ylabel("mean log-likelihood per sample")
    return savefig(fig, path)


def image_rows(rows: list[tuple[str, np.ndarray]], image_shape, path, *, lo: float, hi: float):
    """One row of images per ``(label, images (n, h*w))``, every image on the grey scale
    [lo, hi] (values outside it are clipped): the exercise's samples beside the fitted means
    (:func:`mixlib.em_experiments.sample_rows`)."""
    ncols = max(len(imgs) for _, imgs in rows)
    fig, axes = plt.subplots(
        len(rows), ncols, figsize=(ncols * 0.8, len(rows) * 1.0), squeeze=False
    )
    for r, (label, imgs) in enumerate(rows):
        for c in range(ncols):
            ax = axes[r, c]
            ax.axis("off")
            if c < len(imgs):
                img = np.clip(imgs[c], lo, hi).reshape(image_shape)
                ax.imshow(img, cmap="gray", vmin=lo, vmax=hi)
        axes[r, 0].set_title(label, loc="left", fontsize=8)
    return savefig(fig, path)


def plot_kl_history(records: list[dict], path) -> Path:
    """Test joint KL per outer iteration, one line per seed, coloured by method."""
    df = pd.DataFrame(
        [
            {"method": r["method"], "seed": r["seed"], "iteration": i + 1, "test_kl": v}
            for r in records
            for i, v in enumerate(r["kl_history"])
        ]
    )
    fig, ax = _lines_per_seed(df, "test_kl", "method", 0.7)
    if (df["test_kl"] > 0).all():  # a Monte-Carlo KL near 0 can be negative: no log axis then
        ax.set_yscale("log")
    ax.set_ylabel("test joint KL(q || p)")
    return savefig(fig, path)
