"""Aggregation: tidy records → long table → paper-style tables (Markdown, LaTeX, CSV).

A *record* is one evaluated clustering: ``dataset, model, init, stage, seed`` plus metrics
(``nmi, ari, acc``, ``params``) and the file it came from, its job's ``job_key`` (the MLflow run's
tag ``mixlib.job_key``) and, when the job logged live, the MLflow ``run_id``, so every number in
a table can be traced back to its run. A paper-style table has one column per method (model,
initialisation and stage INIT/TRAIN), the metrics as rows, cells ``mean ± std (n)`` over seeds,
the best mean of each metric in bold; published values can sit beside them.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from .utils import atomic_path

METRICS = ("nmi", "ari", "acc")
ROWS = (*METRICS, "params")
KEYS = ["dataset", "model", "init", "stage"]


def method_label(model: str, init: str, stage: str) -> str:
    """Column name of a method in the tables, e.g. ``mixmate (kmeans) TRAIN``."""
    if model == "init":
        return f"init: {init}"
    base = model if init == "none" else f"{model} ({init})"
    return f"{base} {stage.upper()}"


def long_table(records: list[dict]) -> pd.DataFrame:
    """One row per (run, stage), sorted; the ``method`` column is the table's column label."""
    df = pd.DataFrame.from_records(records)
    if df.empty:
        raise ValueError("no evaluation records to aggregate")
    missing = set(KEYS + ["seed", *METRICS]) - set(df.columns)
    if missing:
        raise ValueError(f"records lack column(s) {sorted(missing)}")
    df["method"] = [method_label(m, i, s) for m, i, s in zip(df.model, df.init, df.stage)]
    return df.sort_values(KEYS + ["seed"], kind="stable").reset_index(drop=True)


def summarise(long: pd.DataFrame) -> pd.DataFrame:
    """Mean, std (ddof=1; NaN for one seed) and n per dataset, method and metric (tidy)."""
    cols = [c for c in ROWS if c in long.columns]
    m = long.melt(id_vars=["dataset", "method"], value_vars=cols, var_name="metric").dropna(
        subset=["value"]
    )
    g = m.groupby(["dataset", "method", "metric"], sort=False)["value"]
    out = g.agg(mean="mean", std=lambda v: v.std(ddof=1) if len(v) > 1 else np.nan, n="count")
    return out.reset_index()


def _fmt(mean: float, std: float, n, metric: str) -> str:
    if metric == "params":
        return f"{int(round(mean)):,}"
    s = f"{mean:.3f}"
    if std is not None and not (isinstance(std, float) and math.isnan(std)):
        s += f" ± {std:.3f}"
    if n is not None and not (isinstance(n, float) and math.isnan(n)):
        s += f" (n={int(n)})"
    return s


def _column(metric: str) -> str:
    return metric if metric == "params" else metric.upper()


def paper_table(summary: pd.DataFrame, dataset: str, published: pd.DataFrame | None = None):
    """Return ``(cells, best)`` for one dataset: a DataFrame of formatted strings, one row per
    method (ours, then the published ones), columns NMI, ARI, ACC and params, and a boolean
    frame marking the best mean of each metric column (params are never marked)."""
    return cross_table(summary, {dataset: published}, prefix=False)


def cross_table(summary: pd.DataFrame, datasets: dict, *, prefix: bool = True):
    """Return ``(cells, best)``: one row per method across ``datasets`` (``{name: published
    summary or None}``), a column per dataset and metric (``"<dataset> NMI"``, ...; without the
    dataset name when ``prefix`` is False) plus ``params`` (per dataset where they differ), as in
    Table 1 of MixMate's paper. A method missing on a dataset has empty cells there; the best
    mean of each metric column is marked."""
    parts = []
    for name, published in datasets.items():
        s = summary[summary.dataset == name].assign(dataset=name)
        if published is not None and not published.empty:
            s = pd.concat([s, published.assign(dataset=name)], ignore_index=True)
        parts.append(s)
    s = pd.concat(parts, ignore_index=True) if parts else summary.iloc[:0]
    methods = list(dict.fromkeys(s.method))
    # published rows after ours, each kept in its order
    methods = [m for m in methods if "[published]" not in m] + [
        m for m in methods if "[published]" in m
    ]
    cols, keys = [], []
    for name in datasets:
        present = set(s[s.dataset == name].metric)
        for metric in METRICS:
            if metric in present:
                cols.append(f"{name} {_column(metric)}" if prefix else _column(metric))
                keys.append((name, metric))
    params = s[s.metric == "params"]
    if not params.empty:  # one column, or one per dataset where a method's count differs
        differ = params.groupby("method")["mean"].nunique().gt(1).any()
        for name in datasets if differ else [None]:
            cols.append(f"{name} params" if name and prefix else "params")
            keys.append((name, "params"))
    cells = pd.DataFrame("", index=methods, columns=cols)
    means = pd.DataFrame(np.nan, index=methods, columns=cols)
    for col, (name, metric) in zip(cols, keys):
        sub = s[s.metric == metric]
        if name is not None:
            sub = sub[sub.dataset == name]
        for r in sub.drop_duplicates("method").itertuples():
            cells.loc[r.method, col] = _fmt(r.mean, r.std, r.n, metric)
            means.loc[r.method, col] = r.mean
    best = pd.DataFrame(False, index=methods, columns=cols)
    for col, (_, metric) in zip(cols, keys):
        if metric != "params" and means[col].notna().any():
            best[col] = means[col] == means[col].max()
    cells.index.name = "method"
    return cells, best


def published_for(reference_csv: str | Path | None, name: str | None) -> pd.DataFrame | None:
    """Published values of ``name`` (a dataset name in the reference CSV) in summary form."""
    if not reference_csv or not name or not Path(reference_csv).exists():
        return None
    ref = pd.read_csv(reference_csv)
    ref = ref[(ref.dataset == name) & ref.metric.isin(ROWS)]
    if ref.empty:
        return None
    stage = ref["stage"].astype(object).where(ref["stage"].notna(), "").astype(str).str.upper()
    method = ref["method"] + np.where(stage != "", " " + stage, "") + " [published]"
    return pd.DataFrame(
        {"method": method, "metric": ref.metric, "mean": ref["mean"], "std": ref["std"], "n": None}
    )


def to_markdown(cells: pd.DataFrame, best: pd.DataFrame, title: str = "", notes=()) -> str:
    """A Markdown table: the index (named by ``cells.index.name``) as the first column, best
    cells in bold; ``notes`` are lines printed under the title."""
    bold = cells.where(~best, "**" + cells + "**")
    lines = [f"### {title}", ""] if title else []
    if notes:
        lines += [*(f"{n}  " for n in notes), ""]
    lines.append(f"| {cells.index.name or ''} | " + " | ".join(bold.columns) + " |")
    lines.append("|---|" + "---|" * len(bold.columns))
    for label, row in bold.iterrows():
        lines.append(f"| {label} | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def _tex(s: str) -> str:
    for a, b in [
        ("\\", r"\textbackslash{}"),
        ("_", r"\_"),
        ("&", r"\&"),
        ("%", r"\%"),
        ("#", r"\#"),
        ("±", r"$\pm$"),
    ]:
        s = s.replace(a, b)
    return s


def to_latex(cells: pd.DataFrame, best: pd.DataFrame, caption: str = "") -> str:
    """A booktabs table; best means in ``\\textbf``."""
    cols = list(cells.columns)
    out = [
        r"\begin{table}[t]",
        r"\centering",
        rf"\begin{{tabular}}{{l{'c' * len(cols)}}}",
        r"\toprule",
        " & ".join([_tex(cells.index.name or ""), *(_tex(c) for c in cols)]) + r" \\",
        r"\midrule",
    ]
    for label, row in cells.iterrows():
        vals = [rf"\textbf{{{_tex(v)}}}" if best.loc[label, c] else _tex(v) for c, v in row.items()]
        out.append(" & ".join([_tex(str(label)), *vals]) + r" \\")
    out += [r"\bottomrule", r"\end{tabular}"]
    if caption:
        out.append(rf"\caption{{{_tex(caption)}}}")
    out.append(r"\end{table}")
    return "\n".join(out) + "\n"


def write_tables(cells, best, out_md, out_tex, out_csv, title: str, notes=()) -> list[Path]:
    """Write the table as Markdown, LaTeX and CSV to the given paths, atomically; return them.
    ``notes`` (lines: provenance, caveats) go under the Markdown title and into the CSV as
    ``#`` comment lines after the table."""
    paths = []
    csv = cells.to_csv() + "".join(f"# {n}\n" for n in notes)
    for p, text in [
        (out_md, to_markdown(cells, best, title, notes)),
        (out_tex, to_latex(cells, best, title)),
        (out_csv, csv),
    ]:
        p = Path(p)
        with atomic_path(p) as tmp:
            tmp.write_text(text)
        paths.append(p)
    return paths


# --- sweeps ----------------------------------------------------------------------------------
# One model trained at several values of one hyperparameter (``sweep`` in the config): a table
# with one row per (method, value) and the metrics as columns, the best mean of each metric
# within a method in bold.


def sweep_summary(long: pd.DataFrame, values: dict, label: str) -> pd.DataFrame:
    """Mean, std (ddof=1; NaN for one seed) and n of each metric per method and swept value.

    Parameters
    ----------
    long : the long table (:func:`long_table`) of the sweep's runs.
    values : ``{model name: value}``, the sweep's points; other models' rows are dropped.
    label : the name shown for the model in the ``method`` column (the swept model's name).

    Returns
    -------
    One row per (method, value), methods in their order in ``long``, values ascending; columns
    ``method, value, <metric>_mean, <metric>_std`` for NMI/ARI/ACC, ``n`` (seeds), and
    ``missing_frac`` (mean fraction of entries the model did not see) where the records have it.
    """
    df = long[long.model.isin(list(values))].copy()
    if df.empty:
        raise ValueError(f"no records of the swept models {sorted(values)}")
    df["value"] = df.model.map(values).astype(float)
    df["method"] = [method_label(label, i, s) for i, s in zip(df.init, df.stage)]
    extra = "missing_frac" in df and df["missing_frac"].notna().any()
    rows = []
    for method in dict.fromkeys(df.method):
        sub = df[df.method == method]
        for value, g in sub.groupby("value", sort=True):
            row = {"method": method, "value": value}
            for m in METRICS:
                row[f"{m}_mean"] = g[m].mean()
                row[f"{m}_std"] = g[m].std(ddof=1) if len(g) > 1 else np.nan
            row["n"] = int(g[METRICS[0]].notna().sum())
            if extra:
                row["missing_frac"] = g["missing_frac"].mean()
            rows.append(row)
    return pd.DataFrame(rows)


def sweep_cells(summary: pd.DataFrame, param: str):
    """Return ``(cells, best)`` of a sweep table: formatted strings with columns ``method``,
    ``param``, NMI, ARI, ACC (``mean ± std``), ``n`` (and ``missing %``), and a boolean frame
    of the same shape marking the best mean of each metric within each method."""
    cols = ["method", param, *(m.upper() for m in METRICS), "n"]
    has_missing = "missing_frac" in summary
    if has_missing:
        cols.append("missing %")
    cells = pd.DataFrame("", index=range(len(summary)), columns=cols)
    best = pd.DataFrame(False, index=cells.index, columns=cols)
    for i, r in enumerate(summary.itertuples(index=False)):
        cells.loc[i, "method"] = r.method
        cells.loc[i, param] = f"{r.value:g}"
        for m in METRICS:
            cells.loc[i, m.upper()] = _fmt(getattr(r, f"{m}_mean"), getattr(r, f"{m}_std"), None, m)
        cells.loc[i, "n"] = str(r.n)
        if has_missing:
            cells.loc[i, "missing %"] = f"{100 * r.missing_frac:.1f}"
    for m in METRICS:
        means = summary[f"{m}_mean"]
        top = means.groupby(summary["method"]).transform("max")
        best[m.upper()] = (means == top).to_numpy() & means.notna().to_numpy()
    return cells, best


def sweep_markdown(cells: pd.DataFrame, best: pd.DataFrame, title: str = "", notes=()) -> str:
    bold = cells.where(~best, "**" + cells + "**")
    lines = [f"### {title}", ""] if title else []
    if notes:
        lines += [*(f"{n}  " for n in notes), ""]
    lines.append("| " + " | ".join(bold.columns) + " |")
    lines.append("|" + "---|" * len(bold.columns))
    lines += ["| " + " | ".join(row) + " |" for row in bold.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def sweep_latex(cells: pd.DataFrame, best: pd.DataFrame, caption: str = "") -> str:
    """A booktabs table, a rule between methods; best means in ``\\textbf``."""
    cols = list(cells.columns)
    out = [
        r"\begin{table}[t]",
        r"\centering",
        rf"\begin{{tabular}}{{ll{'c' * (len(cols) - 2)}}}",
        r"\toprule",
        " & ".join(_tex(c) for c in cols) + r" \\",
        r"\midrule",
    ]
    prev = None
    for i, row in cells.iterrows():
        if prev is not None and row["method"] != prev:
            out.append(r"\midrule")
        prev = row["method"]
        vals = [rf"\textbf{{{_tex(v)}}}" if best.loc[i, c] else _tex(v) for c, v in row.items()]
        out.append(" & ".join(vals) + r" \\")
    out += [r"\bottomrule", r"\end{tabular}"]
    if caption:
        out.append(rf"\caption{{{_tex(caption)}}}")
    out.append(r"\end{table}")
    return "\n".join(out) + "\n"


def write_sweep_tables(
    summary: pd.DataFrame, param: str, title: str, out_md, out_tex, out_csv, notes=()
) -> list[Path]:
    """Write the sweep table as Markdown and LaTeX (formatted) and CSV (the numbers of
    ``summary``, unrounded, with ``value`` renamed to ``param``), atomically; ``notes``
    (provenance lines) go under the Markdown title, the CSV stays numbers only."""
    cells, best = sweep_cells(summary, param)
    texts = [
        (out_md, sweep_markdown(cells, best, title, notes)),
        (out_tex, sweep_latex(cells, best, title)),
        (out_csv, summary.rename(columns={"value": param}).to_csv(index=False)),
    ]
    paths = []
    for p, text in texts:
        with atomic_path(p) as tmp:
            tmp.write_text(text)
        paths.append(Path(p))
    return paths
