"""config/paper.yaml in parts (mixlib.parts, config/paper_parts.yaml): the parts partition its
jobs, and each part's ``--config`` overrides, merged as Snakemake merges them, plan exactly the
jobs the part is said to hold."""

from __future__ import annotations

import copy

import pytest
import yaml
from helpers import ROOT, planned_priorities, run_snakemake
from snakemake.cli import parse_config
from snakemake.utils import update_config

from mixlib import parts as partslib
from mixlib import provenance
from mixlib.errors import ConfigError
from mixlib.plan import load_plan


@pytest.fixture(autouse=True)
def _at_repo(monkeypatch):
    monkeypatch.chdir(ROOT)  # the parts file names its config as the Makefile runs it


def _write(tmp_path, parts, config="config/paper.yaml", publish_root="out"):
    path = tmp_path / "parts.yaml"
    raw = {"config": config, "publish_root": str(publish_root), "parts": parts}
    path.write_text(yaml.safe_dump(raw))
    return path


def test_the_shipped_parts_partition_paper_yaml():
    parts = partslib.load_parts()
    per_part = partslib.check_partition(parts)
    whole = partslib.planned_jobs(load_plan(parts.config))
    assert set().union(*per_part.values()) == whole
    assert sum(map(len, per_part.values())) == len(whole)
    # every 70k training job of a seed in that seed's part
    mnist0 = {j for j in per_part["mnist_seed0"] if j[0] == "train"}
    assert mnist0 == {j for j in whole if j[0] == "train" and j[1] == "mnist" and j[4] == 0}
    assert {j[0] for j in per_part["experiments"]} == {"gmm_exercise", "gmm25"}


def test_overrides_merged_as_snakemake_merges_them_plan_the_part():
    """The overrides go through Snakemake's own parsing and recursive merge (a mapping given
    with --config is merged, not replaced: `experiments={}` would keep every experiment)."""
    parts = partslib.load_parts()
    for name in parts.parts:
        cfg = copy.deepcopy(parts.config)
        update_config(cfg, parse_config(parts.overrides(name)))
        got = partslib.planned_jobs(load_plan(cfg))
        assert got == partslib.planned_jobs(load_plan(parts.part_config(name))), name
        assert load_plan(cfg).publish_dir == f"docs/results/paper/{name}"
        assert all(" " not in a for a in parts.overrides(name))


def test_a_missing_or_doubled_job_is_named(tmp_path):
    some = {
        "a": {"datasets": ["mnist", "fashion_mnist", "usps", "digits", "mnist5k"]},
        "b": {"datasets": ["glass", "letter", "pendigits"]},
        "c": {"experiments": True},
    }
    with pytest.raises(ConfigError, match=r"in no part, e.g. \[\('init', 'vehicle'"):
        partslib.check_partition(partslib.load_parts(_write(tmp_path, some)))
    some["b"]["datasets"].append("vehicle")
    some["d"] = {"datasets": ["mnist"], "seeds": [3]}
    with pytest.raises(ConfigError, match=r"in several parts, e.g. \[\(\('init', 'mnist'"):
        partslib.check_partition(partslib.load_parts(_write(tmp_path, some)))
    del some["d"]
    assert set(partslib.check_partition(partslib.load_parts(_write(tmp_path, some)))) == set("abc")


@pytest.mark.parametrize(
    "parts, message",
    [
        ({"a": {"datasets": ["mnsit"]}}, r"parts.a.datasets: \['mnsit'\] not under `datasets`"),
        ({"a": {"datasets": ["mnist"], "seeds": [7]}}, r"parts.a.seeds: \[7\] not all among"),
        ({"a": {"datasets": ["mnist"], "seed": [0]}}, r"parts.a: a mapping of"),
        ({"a": {"experiments": "yes"}}, r"parts.a.experiments: true or false"),
        ({}, r"no parts"),
    ],
)
def test_a_bad_parts_file_is_refused_by_name(tmp_path, parts, message):
    with pytest.raises(ConfigError, match=message):
        partslib.load_parts(_write(tmp_path, parts))


def test_command_line(tmp_path, capsys):
    assert partslib.main(["mnist_seed0"]) == 0
    assert capsys.readouterr().out.split() == [
        "seeds=[0]",
        "skip_datasets=[fashion_mnist,usps,digits,mnist5k,glass,letter,pendigits,vehicle]",
        "skip_experiments=[gmm_exercise,gmm25]",
        "publish_dir=docs/results/paper/mnist_seed0",
    ]
    assert partslib.main([]) == 0
    assert "14 parts of config/paper.yaml, every job in one" in capsys.readouterr().out
    assert partslib.main(["nope"]) == 2
    assert "no part 'nope'" in capsys.readouterr().err
    path = _write(tmp_path, {"a": {"datasets": ["mnist"]}}, config="config/absent.yaml")
    assert partslib.main(["--file", str(path)]) == 2
    assert "config/absent.yaml does not exist" in capsys.readouterr().err


def test_times_sum_what_the_published_parts_record(tmp_path):
    """The wall times come from the provenance lines of the tables each part published (here
    real published tables copied into two parts' folders); a part with none is 'not run'."""
    root = tmp_path / "published"
    copies = {
        "uci/paper.md": "biglearn/paper.md",
        "experiments/gmm25/table.md": "biglearn/gmm25/table.md",
        "experiments/gmm_exercise/mnist_16/summary.md": "gmm_mnist/gmm_exercise/mnist_16/summary.md",
    }
    for dst, src in copies.items():
        (root / dst).parent.mkdir(parents=True, exist_ok=True)
        text = (ROOT / "docs/results" / src).read_text()
        if dst == "uci/paper.md":  # as an invocation that recorded its CPU's model writes it
            text = text.replace(" on 2 CPU(s)  \n", " on 2 CPU(s) (Test CPU @ 1 GHz)  \n", 1)
        (root / dst).write_text(text)
    raw = yaml.safe_load((ROOT / partslib.PARTS_FILE).read_text())["parts"]
    parts = partslib.load_parts(_write(tmp_path, raw, publish_root=root))
    rows = {r["part"]: r for r in partslib.part_times(parts)}
    assert rows["uci"]["jobs_min"] == pytest.approx(280.0)  # biglearn's 164 jobs
    assert rows["experiments"]["jobs_min"] == pytest.approx(12.2 + 69.0)  # 30 jobs + the exercise
    assert rows["experiments"]["wall_min"] == pytest.approx(0.2)
    assert rows["mnist_seed0"]["tables"] == 0
    text = partslib.times_markdown(parts)
    assert "| mnist_seed0 | not run | | | |" in text
    assert "| **2 of 14 parts** | 0.2 | 361.2 | | |" in text
    assert rows["uci"]["hosts"] == "2 CPU(s), Test CPU @ 1 GHz"


def test_times_estimate_a_part_from_a_run_one_of_other_seeds(tmp_path):
    """A part not run that differs from a run part only by its seeds is estimated by that
    part's invocation time, labelled as an estimate; other datasets are not estimated."""
    root = tmp_path / "published"
    (root / "mnist_seed0").mkdir(parents=True)
    (root / "mnist_seed0/paper.md").write_text((ROOT / "docs/results/table1/paper.md").read_text())
    raw = yaml.safe_load((ROOT / partslib.PARTS_FILE).read_text())["parts"]
    parts = partslib.load_parts(_write(tmp_path, raw, publish_root=root))
    rows = {r["part"]: r for r in partslib.part_times(parts)}
    assert rows["mnist_seed0"]["wall_min"] == pytest.approx(74.8)
    assert rows["mnist_seed0"]["estimate_min"] is None
    for s in (1, 2, 3, 4):
        assert rows[f"mnist_seed{s}"]["estimate_min"] == pytest.approx(74.8)
        assert rows[f"mnist_seed{s}"]["estimate_from"] == ["mnist_seed0"]
    assert rows["fashion_mnist_seed1"]["estimate_min"] is None
    assert rows["small"]["estimate_min"] is None  # all seeds: no run part of that shape
    text = partslib.times_markdown(parts)
    assert "| mnist_seed3 | not run (~75 estimated, as mnist_seed0) | | | |" in text
    assert "| fashion_mnist_seed0 | not run | | | |" in text
    assert "| **1 of 14 parts** | 74.8 | 96.4 | | |" in text
    assert "| **1 run + 4 estimated of 14** | ~374 (estimate) | | | |" in text
    assert "| mnist_seed0 | 74.8 | 96.4 | 2 CPU(s) | " in text  # a table from before host_cpu


def test_times_add_the_sweeps_own_jobs_and_each_invocation_once(tmp_path):
    """A part's sweeps (published under sweeps/<dataset>/<model>/) add the jobs of their points
    that no main table counts; its wall time sums its invocations, each once: the one that
    wrote its tables (named by several tables) and an earlier one that made some of its jobs
    (a part resumed in a second invocation). A sweep table from before these lines adds
    nothing."""
    root = tmp_path / "published"
    sweep = root / "mnist_seed0/sweeps/mnist/mixmate"
    sweep.mkdir(parents=True)
    paper = (ROOT / "docs/results/table1/paper.md").read_text()
    current = next(x for x in paper.splitlines() if x.startswith("invocation: "))
    earlier = (
        "earlier invocations: 2026-11-20T00:00:00+00:00 `aaaaaaaaaa` `snakemake -n` (made 3 of "
        "its jobs, the last 20.0 min after its start) (outputs they made and this one kept are "
        "in the table)  "
    )
    (root / "mnist_seed0/paper.md").write_text(paper.replace(current, f"{current}\n{earlier}"))
    (sweep / "lam.md").write_text(
        f"### mnist: mixmate against lam\n\ncommit: abcdef0123  \n{current}\njobs wall time: 50.0 "
        f"min summed over the 5 benchmarked jobs behind the table; {provenance.OWN_JOBS} 40.0 min "
        "over 4 job(s)  \n\n| method | lam |\n|---|---|\n"
    )
    (sweep / "erase_frac.md").write_text("### old\n\n| method | erase_frac |\n|---|---|\n")
    raw = yaml.safe_load((ROOT / partslib.PARTS_FILE).read_text())["parts"]
    parts = partslib.load_parts(_write(tmp_path, raw, publish_root=root))
    row = {r["part"]: r for r in partslib.part_times(parts)}["mnist_seed0"]
    assert row["jobs_min"] == pytest.approx(96.4 + 40.0)
    assert row["wall_min"] == pytest.approx(74.8 + 20.0)
    assert {"abcdef0", "aaaaaaa"} <= set(row["commits"].split(", "))  # the earlier one's too


def test_pool_writes_the_tables_of_the_parts_run_so_far(tmp_path):
    """--pool: the published parts' long.csv rows (here the repo's real small and mnist_seed0
    parts) pooled into the config's tables, each part cited; a run published by two parts is
    refused by name."""
    import pandas as pd

    root = tmp_path / "published"
    for name in ("small", "mnist_seed0"):
        (root / name).mkdir(parents=True)
        for f in ("long.csv", "paper.md"):
            (root / name / f).write_text((ROOT / "docs/results/paper" / name / f).read_text())
    raw = yaml.safe_load((ROOT / partslib.PARTS_FILE).read_text())["parts"]
    parts = partslib.load_parts(_write(tmp_path, raw, publish_root=root))
    written = partslib.pool(parts, "python -m mixlib.parts --pool")
    out = root / partslib.POOLED
    assert {p.name for p in written} >= {"paper.md", "mnist.md", "digits.csv", "long.csv"}
    long = pd.read_csv(out / "long.csv")
    expect = sum(len(pd.read_csv(root / n / "long.csv")) for n in ("small", "mnist_seed0"))
    assert len(long) == expect and set(long.part) == {"small", "mnist_seed0"}
    paper = (out / "paper.md").read_text()
    assert "| mnist NMI |" in paper and "| digits NMI |" in paper
    assert "[small]: `snakemake" in paper and "[mnist_seed0]: `snakemake" in paper
    assert "command: `python -m mixlib.parts --pool`" in paper
    row = next(x for x in paper.splitlines() if x.startswith("| kmeans TRAIN |"))
    assert "(n=1)" in row and "(n=5)" in row  # mnist: seed 0 so far; digits: its 5 seeds
    # the same runs published by a second part: refused, naming both
    (root / "uci").mkdir()
    for f in ("long.csv", "paper.md"):
        (root / "uci" / f).write_text((root / "small" / f).read_text())
    with pytest.raises(ConfigError, match=r"published by the parts \['small', 'uci'\]"):
        partslib.pool(parts)


def test_skip_experiments_leaves_them_out():
    cfg = yaml.safe_load((ROOT / "config/paper.yaml").read_text())
    update_config(cfg, parse_config(["skip_experiments=[gmm25]"]))
    plan = load_plan(cfg)
    assert plan.gmm25 is None and plan.gmm_exercise is not None
    update_config(cfg, parse_config(["skip_experiments=[gmm26]"]))
    with pytest.raises(ConfigError, match=r"skip_experiments: \['gmm26'\] not defined under"):
        load_plan(cfg)


@pytest.mark.workflow
@pytest.mark.parametrize("name", ["mnist_seed0", "experiments"])
def test_snakemake_plans_a_part_as_its_jobs(tmp_path, name):
    """The real command line (`make paper-part`'s): config/paper.yaml with the part's overrides
    plans that part's training and init jobs and nothing else (a dry run)."""
    parts = partslib.load_parts()
    jobs = partslib.check_partition(parts)[name]
    p = run_snakemake(tmp_path, "-n", "--config", *parts.overrides(name), config=parts.config)
    rows = [ln.split() for ln in p.stdout.splitlines()]
    counts = {r[0]: r[1] for r in rows if len(r) == 2 and r[1].isdigit()}
    assert int(counts.get("train_model", 0)) == sum(j[0] == "train" for j in jobs)
    assert int(counts.get("initialize", 0)) == sum(j[0] == "init" for j in jobs)
    assert int(counts.get("gmm25_simulation", 0)) == sum(j[0] == "gmm25" for j in jobs)
    assert ("gmm_exercise" in counts) == any(j[0] == "gmm_exercise" for j in jobs)
    if name == "mnist_seed0":  # its two long jobs start first (mixlib.models.schedule_priority)
        long = {m for m, prio in planned_priorities(p.stdout).items() if prio == {1}}
        # with the init the missing-pixel MixMate starts from (rules/common.smk init_priority)
        expected = {"deep_power_kmeans", "mixmate.erase_frac0.25", "init:kmeans"}
        assert long == expected, planned_priorities(p.stdout)
