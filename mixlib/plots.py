"""Figures from the long table (seaborn, sd error bars)."""

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
