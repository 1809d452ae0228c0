"""mixlib.combine: one Table 1 from several published directories, each row citing its source."""

import json

import pytest

from mixlib import combine, pipeline, provenance

REFERENCE = "source,dataset,method,stage,metric,mean,std,note\npaper,d,DEC,,acc,0.84,,\n"


def _publish(tmp_path, name, models, commit, n=100, seeds=(0, 1), dataset="d", reference_csv=None):
    """A directory as the workflow publishes it, written by the real aggregate job: long.csv
    and paper.md with the provenance lines of an invocation at ``commit``."""
    work = tmp_path / f"work_{name}"
    work.mkdir()
    records = []
    for model, accs in models.items():
        for seed in seeds:
            acc = accs[seed]
            rec = dict(dataset=dataset, model=model, init="none", stage="train", seed=seed, n=n,
                       nmi=acc, ari=acc, acc=acc, params=10)  # fmt: skip
            p = work / f"{model}_{seed}.json"
            p.write_text(json.dumps([rec]))
            records.append(str(p))
    inv = work / "invocation.json"
    provenance.write_invocation(
        inv, {"command": f"snakemake --configfile config/{name}.yaml", "configs": [f"config/{name}.yaml"],
              "commit": commit, "started": "2026-01-01T00:00:00+00:00", "host_cpus": 2})  # fmt: skip
    out = tmp_path / name
    out.mkdir()
    pipeline.aggregate(
        records=records,
        datasets={dataset: {}},
        out_long=str(out / "long.csv"),
        out_summary=str(work / "summary.csv"),
        tables_out={dataset: [str(work / f"d.{x}") for x in ("md", "tex", "csv")]},
        figures_out={dataset: str(work / "d.png")},
        paper_out=[str(out / f"paper.{x}") for x in ("md", "tex", "csv")],
        reference_csv=reference_csv,
        provenance=provenance.describe(inv),
    )
    return out


def test_a_missing_reference_csv_is_named_under_the_table(tmp_path):
    """A configured reference CSV that is not there (a path relative to another working
    directory) leaves the published rows out with a line saying so, not silently."""
    ref = tmp_path / "ref.csv"
    ref.write_text(REFERENCE)
    found = _publish(tmp_path, "found", {"dec": (0.5, 0.6)}, "a" * 40, reference_csv=str(ref))
    text = (found / "paper.md").read_text()
    assert "DEC [published]" in text and "not found" not in text
    gone = _publish(tmp_path, "gone", {"dec": (0.5, 0.6)}, "a" * 40, reference_csv="../x/ref.csv")
    text = (gone / "paper.md").read_text()
    assert "[published] |" not in text
    assert "reference_csv `../x/ref.csv` not found from the working directory" in text


def test_rows_of_several_tables_side_by_side_each_citing_its_source(tmp_path):
    a = _publish(tmp_path, "table_a", {"kmeans": (0.5, 0.7), "mixmate": (0.8, 0.9)}, "a" * 40)
    b = _publish(tmp_path, "table_b", {"kmeans": (0.1, 0.1), "dec": (0.93, 0.95)}, "b" * 40)
    ref = tmp_path / "ref.csv"
    ref.write_text(REFERENCE)
    long, cells, best, notes = combine.combine(
        [(str(a), []), (str(b), ["dec TRAIN"])], ["d"], ref, command="python -m mixlib.combine x"
    )
    # all of a, only the named row of b; the published row after the measured ones
    assert list(cells.index) == [
        "kmeans TRAIN [table_a]", "mixmate TRAIN [table_a]", "dec TRAIN [table_b]",
        "DEC [published]",
    ]  # fmt: skip
    assert cells.loc["kmeans TRAIN [table_a]", "d ACC"] == "0.600 ± 0.141 (n=2)"
    assert cells.loc["dec TRAIN [table_b]", "d ACC"] == "0.940 ± 0.014 (n=2)"
    assert (
        best.loc["dec TRAIN [table_b]", "d ACC"]
        and not best["d ACC"].drop("dec TRAIN [table_b]").any()
    )
    assert cells.loc["DEC [published]", "d ACC"] == "0.840"
    # rows in the order taken, whatever dataset each has
    c = _publish(tmp_path, "table_c", {"dec": (0.5, 0.5)}, "c" * 40, dataset="e")
    _, cells, _, _ = combine.combine([(str(c), []), (str(a), [])], ["d", "e"])
    assert list(cells.index) == [
        "dec TRAIN [table_c]",
        "kmeans TRAIN [table_a]",
        "mixmate TRAIN [table_a]",
    ]
    # every row traces to its table, and the table to its command and commit
    assert set(long.table) == {str(a), str(b)} and len(long) == 6
    text = "\n".join(notes)
    assert "[table_a]: `snakemake --configfile config/table_a.yaml`; commit `aaaaaaaaaa`" in text
    assert "[table_b]: `snakemake --configfile config/table_b.yaml`; commit `bbbbbbbbbb`" in text
    assert "d: 100" in text and "command: `python -m mixlib.combine x`" in text


def test_command_line_writes_the_tables_and_names_its_own_command(tmp_path, capsys):
    a = _publish(tmp_path, "table_a", {"kmeans": (0.5, 0.7)}, "a" * 40)
    out = tmp_path / "combined"
    combine.main(["--out", str(out), "--datasets", "d", "--take", str(a), "kmeans TRAIN"])
    md = (out / "paper.md").read_text()
    assert "| kmeans TRAIN [table_a] | **0.600 ± 0.141 (n=2)**" in md
    assert f"--take {a} 'kmeans TRAIN'`" in md  # the command that re-makes it, quoted for a shell
    assert (out / "paper.tex").is_file() and "kmeans TRAIN [table_a]" in (
        out / "long.csv"
    ).read_text()
    assert provenance.read_notes(out / "paper.md")["command"].startswith(
        "`python -m mixlib.combine"
    )


def test_bad_sources_fail_naming_the_problem(tmp_path):
    a = _publish(tmp_path, "table_a", {"kmeans": (0.5, 0.7)}, "a" * 40)
    with pytest.raises(ValueError, match=r"no method \['dec TRAIN'\]; it has \['kmeans TRAIN'\]"):
        combine.combine([(str(a), ["dec TRAIN"])], ["d"])
    with pytest.raises(FileNotFoundError, match="nowhere/long.csv: not found"):
        combine.combine([(str(tmp_path / "nowhere"), [])], ["d"])
    with pytest.raises(ValueError, match=r"--datasets \['e'\]: in none of the tables"):
        combine.combine([(str(a), [])], ["d", "e"])
    (tmp_path / "other").mkdir()
    small = _publish(tmp_path / "other", "table_a", {"dec": (0.9, 0.9)}, "c" * 40, n=50)
    with pytest.raises(ValueError, match="two directories named"):
        combine.combine([(str(a), []), (str(small), [])], ["d"])
    subset = _publish(tmp_path, "subset", {"dec": (0.9, 0.9)}, "c" * 40, n=50)
    with pytest.raises(ValueError, match="dataset 'd' has different sizes"):
        combine.combine([(str(a), []), (str(subset), [])], ["d"])
    old = tmp_path / "old"
    old.mkdir()
    (old / "long.csv").write_text("dataset,method,seed,nmi,ari,acc\nd,kmeans TRAIN,0,0.5,0.5,0.5\n")
    (old / "paper.md").write_text("### d\n")
    with pytest.raises(ValueError, match=r"old/long.csv: lacks column\(s\) \['n'\]"):
        combine.combine([(str(old), [])], ["d"])


def test_runs_of_several_directories_pooled_into_one_row(tmp_path):
    """``--take A+B``: the seeds of a method published by two invocations become one row, mean ±
    std over all of them, both directories cited; a seed in both, or two sample counts, is
    refused."""
    a = _publish(tmp_path, "dec_a", {"dec": (0.90, 0.92), "kmeans": (0.5, 0.5)}, "a" * 40)
    b = _publish(tmp_path, "dec_b", {"dec": {2: 0.97}}, "b" * 40, seeds=(2,))
    long, cells, _, notes = combine.combine([([str(a), str(b)], ["dec TRAIN"])], ["d"])
    assert list(cells.index) == ["dec TRAIN [dec_a + dec_b]"]
    assert cells.loc["dec TRAIN [dec_a + dec_b]", "d ACC"] == "0.930 ± 0.036 (n=3)"
    assert sorted(long.seed) == [0, 1, 2] and set(long.table) == {str(a), str(b)}
    text = "\n".join(notes)
    assert "[dec_a]: `snakemake --configfile config/dec_a.yaml`; commit `aaaaaaaaaa`" in text
    assert "[dec_b]: `snakemake --configfile config/dec_b.yaml`; commit `bbbbbbbbbb`" in text
    assert "Runs: 3 records from 2 table(s)." in text
    out = tmp_path / "combined"
    combine.main(["--out", str(out), "--datasets", "d", "--take", f"{a}+{b}", "dec TRAIN"])
    assert "| dec TRAIN [dec_a + dec_b] | **0.930 ± 0.036 (n=3)**" in (out / "paper.md").read_text()

    c = _publish(tmp_path, "dec_c", {"dec": {1: 0.5}}, "c" * 40, seeds=(1,))
    with pytest.raises(
        ValueError, match=r"dec TRAIN \[dec_a \+ dec_c\] on d, seed 1, is in .*it would count twice"
    ):
        combine.combine([([str(a), str(c)], [])], ["d"])
    e = _publish(tmp_path, "dec_e", {"dec": {5: 0.5}}, "e" * 40, seeds=(5,), n=50)
    with pytest.raises(ValueError, match="dataset 'd' has different sizes"):
        combine.combine([([str(b), str(e)], [])], ["d"])
