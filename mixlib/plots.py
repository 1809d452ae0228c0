"""Figures from the long table (seaborn, sd error bars)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from .utils import atomic_path  # noqa: E402


def savefig(fig, path: str | Path) -> Path:
    """Save a matplotlib figure atomically (PNG) and close it."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight", format=path.suffix.lstrip(".") or "png")
    plt.close(fig)
    return path


def metrics_by_method(
    long: pd.DataFrame, dataset: str, path: str | Path, metrics=("nmi", "ari", "acc")
) -> Path:
    """Bar chart of each metric by method (mean over seeds, sd error bars, seeds as dots)."""
    df = long[long.dataset == dataset].melt(
        id_vars=["method", "seed"], value_vars=list(metrics), var_name="metric", value_name="score"
    )
    order = list(dict.fromkeys(df.method))
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
