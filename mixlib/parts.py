"""A long config run in parts, each short enough for one sitting of a small machine.

``config/paper.yaml`` is ~15-19 hours on 2 cores: more than a laptop's night and more than a
session of a machine that does not survive it. A parts file (``config/paper_parts.yaml``) cuts
it into named parts, each a set of datasets (all their models, sweeps and inits) and of seeds,
with or without the config's ``experiments``, and each published to its own folder. A part runs
as the config itself with ``--config`` overrides (``seeds``, ``skip_datasets``,
``skip_experiments``, ``publish_dir``), so a part's jobs are exactly the config's jobs of that
part: the same paths, parameters and results as in one run of the whole.

The parts must partition the config's jobs (every training, init and experiment job in exactly
one part); :func:`check_partition` says which job is missing or doubled, and the command line
checks it before it prints anything::

    python -m mixlib.parts                 # the parts, their jobs, the partition checked
    python -m mixlib.parts mnist_seed0     # that part's --config overrides, one per line
    python -m mixlib.parts --times         # the published parts' wall times, summed, and
                                           # an estimate for the parts that differ only by seed
    python -m mixlib.parts --pool          # the tables of the parts run so far, pooled

``make paper-part PART=mnist_seed0`` runs one (README, "Full scale"). Steps shared by the parts
of a dataset (its download, preparation and init features) run again in each part that does not
find them, so the parts' summed wall time is an upper bound on one run of the whole.
"""

from __future__ import annotations

import argparse
import copy
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from . import provenance
from .errors import ConfigError
from .plan import Plan, load_plan

PARTS_FILE = "config/paper_parts.yaml"
_PART_KEYS = {"datasets", "seeds", "experiments"}


@dataclass(frozen=True)
class Part:
    name: str
    datasets: tuple[str, ...]
    seeds: tuple[int, ...] | None  # None: every seed of the config
    experiments: bool


@dataclass(frozen=True)
class Parts:
    path: Path
    config_path: Path
    config: dict  # the config file as read, before any part's overrides
    publish_root: str
    parts: dict[str, Part]

    def overrides(self, name: str) -> list[str]:
        """Part ``name`` as Snakemake ``--config`` arguments (no spaces, one argument each)."""
        p = self.part(name)
        out = []
        if p.seeds is not None:
            out.append(f"seeds=[{','.join(map(str, p.seeds))}]")
        skip = [d for d in self.config["datasets"] if d not in p.datasets]
        if skip:
            out.append(f"skip_datasets=[{','.join(skip)}]")
        if not p.experiments and self.config.get("experiments"):
            out.append(f"skip_experiments=[{','.join(self.config['experiments'])}]")
        out.append(f"publish_dir={self.publish_root}/{p.name}")
        return out

    def part_config(self, name: str) -> dict:
        """The config with part ``name``'s overrides applied (what ``--config`` makes of it)."""
        p = self.part(name)
        cfg = copy.deepcopy(self.config)
        if p.seeds is not None:
            cfg["seeds"] = list(p.seeds)
        cfg["skip_datasets"] = [d for d in cfg["datasets"] if d not in p.datasets]
        if not p.experiments:
            cfg["skip_experiments"] = list(cfg.get("experiments") or {})
        cfg["publish_dir"] = f"{self.publish_root}/{p.name}"
        return cfg

    def part(self, name: str) -> Part:
        if name not in self.parts:
            raise ConfigError(f"{self.path}: no part {name!r} (parts: {', '.join(self.parts)})")
        return self.parts[name]


def load_parts(path: str | Path = PARTS_FILE) -> Parts:
    """Read and check a parts file: its config exists, every part names datasets of it and
    seeds among its seeds."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such parts file")
    raw = yaml.safe_load(path.read_text()) or {}
    for key in ("config", "publish_root", "parts"):
        if key not in raw:
            raise ConfigError(f"{path}: missing key {key!r}")
    config_path = Path(raw["config"])
    if not config_path.is_file():
        raise ConfigError(f"{path}: config: {config_path} does not exist")
    config = yaml.safe_load(config_path.read_text())
    datasets, seeds = list(config.get("datasets") or {}), list(config.get("seeds") or [])
    parts = {}
    for name, spec in (raw["parts"] or {}).items():
        key = f"{path}: parts.{name}"
        if not isinstance(spec, dict) or set(spec) - _PART_KEYS:
            raise ConfigError(f"{key}: a mapping of {sorted(_PART_KEYS)}, got {spec!r}")
        ds = spec.get("datasets", [])
        unknown = [d for d in ds if d not in datasets]
        if unknown:
            raise ConfigError(f"{key}.datasets: {unknown} not under `datasets` of {config_path}")
        ss = spec.get("seeds")
        if ss is not None and [s for s in ss if s not in seeds]:
            raise ConfigError(f"{key}.seeds: {ss} not all among the seeds of {config_path} {seeds}")
        ex = spec.get("experiments", False)
        if not isinstance(ex, bool):
            raise ConfigError(f"{key}.experiments: true or false, got {ex!r}")
        parts[name] = Part(name, tuple(ds), None if ss is None else tuple(ss), ex)
    if not parts:
        raise ConfigError(f"{path}: no parts")
    return Parts(path, config_path, config, str(raw["publish_root"]), parts)


def planned_jobs(plan: Plan) -> set[tuple]:
    """Every job of ``plan`` that computes something of its own: training (config entries and
    sweep variants), inits, and the experiments' runs."""
    jobs = {("train", *r) for r in plan.runs}
    for s in plan.sweeps:
        for d in s.datasets:
            jobs |= {("train", *r) for r in plan.sweep_runs(d, s.model, s.param)}
    jobs |= {("init", *r) for r in plan.init_runs()}
    jobs |= {("pretrain", *r) for r in plan.pretrain_runs()}
    if plan.gmm_exercise:
        ex = plan.gmm_exercise
        jobs |= {("gmm_exercise", d, i, s) for d in ex.datasets for i in ex.inits for s in ex.seeds}
    if plan.gmm25:
        jobs |= {("gmm25", m, s) for m, s in plan.gmm25.runs()}
    return jobs


def check_partition(parts: Parts) -> dict[str, set[tuple]]:
    """Each part's jobs; raises :class:`ConfigError` naming the jobs of the config that no part
    or more than one part runs."""
    whole = planned_jobs(load_plan(parts.config))
    per_part = {n: planned_jobs(load_plan(parts.part_config(n))) for n in parts.parts}
    seen: dict[tuple, list[str]] = {}
    for name, jobs in per_part.items():
        for j in jobs:
            seen.setdefault(j, []).append(name)
    missing = sorted(whole - set(seen), key=str)
    doubled = sorted(((j, n) for j, n in seen.items() if len(n) > 1), key=str)
    if missing or doubled:
        msg = [f"{parts.path} does not partition the jobs of {parts.config_path}:"]
        if missing:
            msg.append(f"{len(missing)} in no part, e.g. {missing[:3]}")
        if doubled:
            msg.append(f"{len(doubled)} in several parts, e.g. {doubled[:3]}")
        raise ConfigError(" ".join(msg))
    return per_part


_MINUTES = re.compile(r"([0-9.]+) min")
_SPAN = re.compile(r"started (\S+), table written \S+ \(([0-9.]+) min\)")
_EARLIER = re.compile(
    r"(\S+) `([^`]*)` `[^`]*` \(made \d+ of its jobs, the last ([0-9.]+) min after"
)
_OWN = re.compile(re.escape(provenance.OWN_JOBS) + r" ([0-9.]+) min")
_HOST = re.compile(r"on (\d+) CPU\(s\)(?: \((.+)\))?\s*$")


def _spans(notes: dict, spans: dict, commits: set) -> None:
    """Add a table's invocations to ``spans`` ({start: minutes}, the longest seen): the one that
    wrote it (start to table) and the earlier ones that made some of its jobs (start to their
    last job), so that a part run in several invocations counts each invocation once; and
    their commits to ``commits``."""
    found = _SPAN.findall(notes.get("invocation", ""))
    if "commit" in notes:
        commits.add(notes["commit"][:7])
    for start, commit, minutes in _EARLIER.findall(notes.get("earlier invocations", "")):
        found.append((start, minutes))
        commits.add(commit[:7])
    for start, minutes in found:
        spans[start] = max(spans.get(start, 0.0), float(minutes))


def part_times(parts: Parts) -> list[dict]:
    """Per part, from the provenance lines of the tables it published under
    ``<publish_root>/<part>`` (none: not run yet): the wall time of its invocations (each
    one's longest span in its tables, summed over the invocations: the one that wrote them and
    earlier ones that made some of their jobs), the summed wall time of its jobs (the main tables' and
    the jobs of the sweeps' own points, each job once), the hosts (CPU count and, where the
    invocation recorded it, the CPU's model), the commits (of the invocations that wrote its
    tables and made its jobs)."""
    rows = []
    for name in parts.parts:
        root = Path(parts.publish_root) / name
        tables = [
            p for p in (root / "paper.md", root / "gmm25" / "table.md") if p.is_file()
        ] + sorted(root.glob("gmm_exercise/*/summary.md"))
        sweeps = sorted(root.glob("sweeps/*/*/*.md"))
        row = {"part": name, "tables": len(tables), "wall_min": None, "jobs_min": None}
        commits, hosts, spans = set(), set(), {}
        for t in tables:
            notes = provenance.read_notes(t)
            commits.add(notes.get("commit", "unknown")[:7])  # "unknown": a table without one
            _spans(notes, spans, commits)
            h = _HOST.search(notes.get("invocation", ""))
            if h:
                hosts.add(f"{h.group(1)} CPU(s)" + (f", {h.group(2)}" if h.group(2) else ""))
            job = _MINUTES.search(notes.get("jobs wall time", ""))
            job = job or re.search(r"^this job: ([0-9.]+) min", t.read_text(), re.M)
            if job:
                row["jobs_min"] = (row["jobs_min"] or 0.0) + float(job.group(1))
        for t in sweeps:  # only the jobs of their points that no main table counts
            notes = provenance.read_notes(t)
            _spans(notes, spans, commits)
            own = _OWN.search(notes.get("jobs wall time", ""))
            if own:
                row["jobs_min"] = (row["jobs_min"] or 0.0) + float(own.group(1))
        if spans:
            row["wall_min"] = sum(spans.values())
        row["commits"] = ", ".join(sorted(commits))
        row["hosts"] = "; ".join(sorted(hosts))
        rows.append(row)
    _estimate_unrun(parts, rows)
    return rows


def _estimate_unrun(parts: Parts, rows: list[dict]) -> None:
    """A part not run yet that differs from run parts only by its seeds (the same datasets
    and experiments, as many seeds) gets their mean invocation time as ``estimate_min``, and
    their names as ``estimate_from``: an extrapolation, labelled as one, never a measurement."""
    shape = lambda p: (p.datasets, None if p.seeds is None else len(p.seeds), p.experiments)  # noqa: E731
    run = [r for r in rows if r["tables"] and r["wall_min"] is not None]
    for r in rows:
        r["estimate_min"], r["estimate_from"] = None, []
        if r["tables"]:
            continue
        like = [o for o in run if shape(parts.part(o["part"])) == shape(parts.part(r["part"]))]
        if like:
            r["estimate_min"] = sum(o["wall_min"] for o in like) / len(like)
            r["estimate_from"] = [o["part"] for o in like]


def times_markdown(parts: Parts) -> str:
    """The parts' times as a Markdown table: the sum over the parts run so far, and the run
    plus estimated total where some parts are estimated (:func:`_estimate_unrun`)."""
    rows = part_times(parts)
    fmt = lambda v: "" if v is None else f"{v:.1f}"  # noqa: E731
    lines = [
        f"### {parts.config_path} in parts ({parts.path}): wall times",
        "",
        "| part | invocation (min) | jobs summed (min) | host | commit |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        if not r["tables"]:
            est = r["estimate_min"]
            if est is None:
                lines.append(f"| {r['part']} | not run | | | |")
            else:
                like = " and ".join(r["estimate_from"])
                lines.append(f"| {r['part']} | not run (~{est:.0f} estimated, as {like}) | | | |")
        else:
            cells = (fmt(r["wall_min"]), fmt(r["jobs_min"]), r["hosts"], r["commits"])
            lines.append(f"| {r['part']} | " + " | ".join(cells) + " |")
    done = [r for r in rows if r["tables"]]
    wall = sum(r["wall_min"] or 0.0 for r in done)
    jobs = sum(r["jobs_min"] or 0.0 for r in done)
    lines.append(f"| **{len(done)} of {len(rows)} parts** | {wall:.1f} | {jobs:.1f} | | |")
    guessed = [r for r in rows if r["estimate_min"] is not None]
    if guessed:
        total = wall + sum(r["estimate_min"] for r in guessed)
        lines.append(
            f"| **{len(done)} run + {len(guessed)} estimated of {len(rows)}** "
            f"| ~{total:.0f} (estimate) | | | |"
        )
    return "\n".join(lines) + "\n"


POOLED = "pooled"  # <publish_root>/pooled: the tables of every part run so far


def pool(parts: Parts, command: str = "") -> list[Path]:
    """The config's tables from the parts published so far: their ``long.csv`` rows (one per
    run and stage) pooled, each dataset's table and the cross-dataset one (MixMate's Table 1
    layout, the config's ``reference_csv`` rows beside them) written to
    ``<publish_root>/pooled`` with the ``long.csv`` they summarise, as one run of the whole
    config would write them once every part has run: a dataset's seeds, run by separate parts
    (``mnist_seed0`` ... ``mnist_seed4``), become one mean ± std. Each part's provenance (its
    command, commit, invocation) is cited under the cross-dataset table. Nothing is re-run;
    a run (dataset, method, seed) published by two parts is refused (it would count twice)."""
    import pandas as pd

    from . import combine, tables
    from .pipeline import dataset_title, table_notes
    from .utils import atomic_path

    if POOLED in parts.parts:
        raise ConfigError(f"{parts.path}: a part is named {POOLED!r}, the pooled tables' folder")
    root = Path(parts.publish_root)
    longs, sources = [], []
    for name in parts.parts:
        d = root / name
        if not (d / "long.csv").is_file():
            continue
        longs.append(pd.read_csv(d / "long.csv").assign(part=name))
        if (d / "paper.md").is_file():
            sources.append(combine.source_note(name, provenance.read_notes(d / "paper.md")))
    if not longs:
        raise ConfigError(f"no part of {parts.path} has published a long.csv under {root}")
    long = pd.concat(longs, ignore_index=True)
    clash = combine.counted_twice(long, "part")
    if not clash.empty:
        c = clash.iloc[0]
        raise ConfigError(
            f"{c.method} on {c.dataset}, seed {c.seed}, is published by the parts "
            f"{sorted(set(clash.part[(clash.dataset == c.dataset) & (clash.method == c.method)]))}"
            ": pooled, it would count twice"
        )
    plan = load_plan(parts.config)
    datasets = {d: spec for d, spec in plan.datasets.items() if d in set(long.dataset)}
    published = {
        d: tables.published_for(plan.reference_csv, spec.get("published_as", d))
        for d, spec in datasets.items()
    }
    summary = tables.summarise(long)
    out, written = root / POOLED, []
    for d, spec in datasets.items():
        cells, best = tables.paper_table(summary, d, published[d])
        title = dataset_title(d, spec)
        paths = (out / f"{d}.md", out / f"{d}.tex", out / f"{d}.csv")
        written += tables.write_tables(cells, best, *paths, title)
    cells, best = tables.cross_table(summary, published)
    runs = ", ".join(f"{n} ({(long.part == n).sum()})" for n in dict.fromkeys(long.part))
    notes = table_notes(None, long)
    notes[1:1] = [f"{d}: {spec['note']}" for d, spec in datasets.items() if spec.get("note")]
    notes += [
        f"Pooled from the parts of {parts.path} published under {root} (records per part): "
        f"{runs}; nothing re-run. Each part's provenance:",
        *sources,
        f"command: `{command}`" if command else "command: not recorded",
        f"commit: {provenance.git_commit(Path(__file__).resolve().parents[1])}",
    ]
    title = f"{', '.join(datasets)}: mean ± std over seeds (n runs), the parts run so far"
    paths = (out / "paper.md", out / "paper.tex", out / "paper.csv")
    written += tables.write_tables(cells, best, *paths, title, notes)
    with atomic_path(out / "long.csv") as tmp:
        long.to_csv(tmp, index=False)
    return [*written, out / "long.csv"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m mixlib.parts",
        description="A config's parts (a parts file): list them, or print one's --config overrides.",
    )
    ap.add_argument("part", nargs="?", help="print this part's --config overrides")
    ap.add_argument("--file", default=PARTS_FILE, help=f"the parts file (default {PARTS_FILE})")
    ap.add_argument(
        "--times",
        action="store_true",
        help="the published parts' wall times and estimates, as Markdown",
    )
    ap.add_argument(
        "--pool",
        action="store_true",
        help=f"write the tables of every part published so far, pooled, to <publish_root>/{POOLED}",
    )
    args = ap.parse_args(argv)
    try:
        parts = load_parts(args.file)
        per_part = check_partition(parts)
        if args.times:
            print(times_markdown(parts), end="")
            return 0
        if args.pool:
            cmd = " ".join(
                ["python -m mixlib.parts", *(argv if argv is not None else sys.argv[1:])]
            )
            written = pool(parts, cmd)
            print(f"wrote {len(written)} files to {written[0].parent}")
            return 0
        if args.part:
            print("\n".join(parts.overrides(args.part)))
            return 0
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{parts.path}: {len(parts.parts)} parts of {parts.config_path}, every job in one")
    for name, jobs in per_part.items():
        p = parts.parts[name]
        kinds = {
            k: sum(j[0] == k for j in jobs) for k in ("train", "init", "gmm_exercise", "gmm25")
        }
        counts = ", ".join(f"{v} {k}" for k, v in kinds.items() if v)
        what = [", ".join(p.datasets)] if p.datasets else []
        if p.datasets:
            what.append("all seeds" if p.seeds is None else f"seeds {list(p.seeds)}")
        if p.experiments:
            what.append("the experiments")
        print(f"  {name}: {'; '.join(what)}: {counts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
