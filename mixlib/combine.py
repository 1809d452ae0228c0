"""One table from several published result directories: the measured rows of different configs
side by side in MixMate's Table 1 layout, beside the published ones, each row citing the table
(and so the command, config and commit) it came from.

A workflow run publishes one config's tables (``publish_dir``: ``long.csv``, ``paper.md``, ...);
the methods of MixMate's Table 1 are measured by several configs (``table1``, ``dec_mnist``,
``n2d_mnist``, ...). This reads their ``long.csv`` (one row per run and stage) and the provenance
lines of their ``paper.md``, and writes ``paper.md|tex|csv`` and ``long.csv`` to ``--out``::

    python -m mixlib.combine --out docs/results/combined --datasets mnist fashion_mnist \\
        --reference ../shared/reference/published_results.csv \\
        --take docs/results/table1 --take docs/results/dec_mnist "dec TRAIN" "idec TRAIN"

``--take DIR [METHOD ...]`` takes the named methods of DIR's table (all of them when none is
named); a row reads ``<method> [<DIR's name>]``. Nothing is recomputed: the cells are the
mean ± std over the runs in each source's ``long.csv``, as its own table printed them.

``--take DIR1+DIR2 [METHOD ...]`` pools the runs of several directories into one row, ``<method>
[<name1> + <name2>]``: the seeds of one method measured by separate invocations (say seed 0 by
``config/n2d_mnist.yaml``, seeds 1 and 2 by ``config/n2d_mnist_more.yaml``) become one mean ±
std over all of them, each directory cited; a seed of a method and dataset in two of them is
refused (it would count twice).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from . import provenance, tables
from .utils import atomic_path

REPO = Path(__file__).resolve().parents[1]  # the checkout whose commit a combined table names


def read_source(directory: str | Path, methods=()) -> tuple[pd.DataFrame, dict]:
    """``(rows, notes)`` of one published directory: the rows of its ``long.csv`` for
    ``methods`` (all when empty), labelled ``<method> [<name>]``, and its table's provenance."""
    return _read_one(Path(directory), methods, Path(directory).name)


def read_pooled(directories, methods=()) -> tuple[pd.DataFrame, str, list[tuple[str, dict]]]:
    """``(rows, label, [(name, notes), ...])`` of the directories pooled into one row per method:
    their rows (each directory's ``methods``, all when empty), labelled ``<method> [<name1> +
    <name2> ...]``; refused when a (dataset, method, seed) comes from two of them."""
    dirs = [Path(d) for d in directories]
    label = " + ".join(d.name for d in dirs)
    parts, notes = [], []
    for d in dirs:
        rows, note = _read_one(d, methods, label)
        parts.append(rows)
        notes.append((d.name, note))
    rows = pd.concat(parts, ignore_index=True)  # ``table``: each row's own directory
    clash = counted_twice(rows, "table")
    if not clash.empty:
        first = clash.iloc[0]
        raise ValueError(
            f"--take {'+'.join(map(str, dirs))}: {first.method} on {first.dataset}, seed "
            f"{first.seed}, is in {sorted(set(clash.table))}: pooled, it would count twice"
        )
    return rows, label, notes


def counted_twice(rows: pd.DataFrame, source: str) -> pd.DataFrame:
    """The rows of ``rows`` whose run (dataset, method, seed) comes from more than one value of
    column ``source`` (a directory, a part): pooled, such a run would count twice."""
    key = ["dataset", "method", "seed"]
    return rows[rows.groupby(key)[source].transform("nunique") > 1]


def _read_one(d: Path, methods, label: str) -> tuple[pd.DataFrame, dict]:
    long_csv, paper_md = d / "long.csv", d / "paper.md"
    for p in (long_csv, paper_md):
        if not p.is_file():
            raise FileNotFoundError(f"{p}: not found; --take expects a publish_dir of the workflow")
    long = pd.read_csv(long_csv)
    missing = {"dataset", "method", "seed", "n", *tables.METRICS} - set(long.columns)
    if missing:
        raise ValueError(f"{long_csv}: lacks column(s) {sorted(missing)}")
    if methods:
        unknown = [m for m in methods if m not in set(long.method)]
        if unknown:
            raise ValueError(f"{long_csv}: no method {unknown}; it has {sorted(set(long.method))}")
        long = long[long.method.isin(methods)]
    return long.assign(method=long.method + f" [{label}]", table=str(d)), provenance.read_notes(
        paper_md
    )


def _sizes(long: pd.DataFrame) -> dict:
    """Samples per dataset, the same in every table: the largest ``n`` of a dataset's runs in
    each (a row may score a subset, as the SSC init its 2,000 samples); a dataset name that
    means another sample count in one config, e.g. a subset, fails here."""
    out = {}
    for name, g in long.groupby("dataset", sort=False):
        per_table = g.groupby("table")["n"].max().astype(int)
        if per_table.nunique() != 1:
            raise ValueError(
                f"dataset {name!r} has different sizes in the tables taken: {per_table.to_dict()}"
            )
        out[name] = int(per_table.iloc[0])
    return out


def source_note(name: str, notes: dict) -> str:
    parts = [f"[{name}]: {notes.get('command', 'command not recorded')}"]
    if "commit" in notes:
        parts.append(f"commit `{notes['commit'][:10]}`")
    for key in ("config", "invocation", "earlier invocations"):
        if key in notes:
            parts.append(f"{key} {notes[key]}")
    return "; ".join(parts)


def combine(
    takes: list[tuple[str, list[str]]],
    datasets: list[str],
    reference_csv: str | Path | None = None,
    command: str = "",
    repo: str | Path = REPO,
):
    """``(long, cells, best, notes)``: the rows of every ``(directory, methods)`` in ``takes``
    on ``datasets`` (``directory``: one path, or a list of paths whose runs are pooled, see
    :func:`read_pooled`), their Table 1 layout (``tables.cross_table``) with the published rows
    of ``reference_csv``, and the notes naming each source's provenance and this table's own
    (the commit is ``repo``'s, by default the checkout that holds this code)."""
    if not takes:
        raise ValueError("nothing to combine: name at least one --take DIR")
    groups = [[d] if isinstance(d, str | Path) else list(d) for d, _ in takes]
    names = [" + ".join(Path(d).name for d in g) for g in groups]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"--take: two directories named {dup}; their rows would read the same")
    parts, sources = [], []
    for group, (_, methods) in zip(groups, takes):
        rows, _, notes = read_pooled(group, methods)
        rows = rows[rows.dataset.isin(datasets)]
        if rows.empty:
            raise ValueError(f"{'+'.join(map(str, group))}: no rows on the datasets {datasets}")
        parts.append(rows)
        sources.extend(source_note(name, note) for name, note in notes)
    long = pd.concat(parts, ignore_index=True)
    absent = [d for d in datasets if d not in set(long.dataset)]
    if absent:
        raise ValueError(f"--datasets {absent}: in none of the tables taken")
    sizes = _sizes(long)
    summary = tables.summarise(long)
    published = {name: tables.published_for(reference_csv, name) for name in datasets}
    cells, best = tables.cross_table(summary, published)
    # rows in the order taken (cross_table lists the first dataset's methods first)
    taken = dict.fromkeys(long.method)
    order = [*taken, *(m for m in cells.index if m not in taken)]
    cells, best = cells.loc[order], best.loc[order]
    notes = [
        "`<method> [<name>]` = mean ± std over the seeds (n runs) of the table published in "
        "`<name>` (its config, command and commit below); [published] = the paper's number.",
        "Every table's runs saw the same number of samples per dataset ("
        + ", ".join(f"{d}: {n:,}" for d, n in sizes.items())
        + "); the preprocessing and seeds are each config's own.",
        f"Runs: {len(long)} records from {long.table.nunique()} table(s).",
        *sources,
        f"command: `{command}`" if command else "command: not recorded",
        f"commit: {provenance.git_commit(repo)}",
        f"written: {datetime.now(UTC).isoformat(timespec='seconds')}",
    ]
    return long, cells, best, notes


def main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(
        prog="python -m mixlib.combine", description=__doc__.split("\n\n")[0]
    )
    ap.add_argument("--out", required=True, help="directory for paper.md|tex|csv and long.csv")
    ap.add_argument("--datasets", nargs="+", required=True, help="dataset names, in column order")
    ap.add_argument("--reference", help="published results CSV (rows marked [published])")
    ap.add_argument(
        "--take",
        nargs="+",
        action="append",
        required=True,
        metavar=("DIR", "METHOD"),
        help="a published directory (or DIR1+DIR2...: their runs pooled into one row) and the "
        "methods to take from it (all when none is named)",
    )
    a = ap.parse_args(argv)
    if a.reference and not Path(a.reference).is_file():
        ap.error(f"--reference {a.reference}: no such file")
    command = shlex.join(["python", "-m", "mixlib.combine", *argv])
    takes = [(t[0].split("+"), t[1:]) for t in a.take]
    long, cells, best, notes = combine(takes, a.datasets, a.reference, command)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    title = f"{', '.join(a.datasets)}: every measured row beside the published ones"
    tables.write_tables(
        cells, best, out / "paper.md", out / "paper.tex", out / "paper.csv", title, notes
    )
    with atomic_path(out / "long.csv") as tmp:
        long.to_csv(tmp, index=False)
    print(f"wrote {out}/paper.md|tex|csv and long.csv ({len(cells)} rows)")


if __name__ == "__main__":
    main()
