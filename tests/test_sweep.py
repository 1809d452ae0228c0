"""Hyperparameter sweeps (``models.<name>.sweep``): expansion into model variants, the sweep
table, config errors, and an end-to-end run with the missing-data experiment."""

import copy
import re

import numpy as np
import pandas as pd
import pytest
from helpers import load_config, run_snakemake

from mixlib import provenance, tables
from mixlib.errors import ConfigError
from mixlib.models.mixmate import erase_masks
from mixlib.plan import load_plan, value_tag, variant_name

MODEL_WILDCARD = re.compile(r"[A-Za-z0-9_.-]+")  # rules/common.smk


def _config():
    return {
        "seeds": [0, 1],
        "datasets": {"blobs": {"source": "synthetic"}},
        "inits": {"kmeans": {"method": "kmeans"}},
        "models": {
            "km": {"kind": "kmeans", "params": {"n_init": 2}},
            "gmm": {
                "kind": "sklearn_gmm",
                "params": {"reg_covar": 0.01},
                "inits": ["kmeans"],
                "sweep": {"reg_covar": [0.001, 0.01, 1.0], "max_iter": [1, 100]},
            },
        },
    }


# --- expansion --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, tag",
    [(0.5, "0.5"), (3, "3"), (1.0, "1.0"), (1e-05, "1e-05"), (1e20, "1e20"), (-0.25, "-0.25")],
)
def test_variant_names_are_wildcard_safe(value, tag):
    assert value_tag(value) == tag
    name = variant_name("mixmate", "lam", value)
    assert name == f"mixmate.lam{tag}" and MODEL_WILDCARD.fullmatch(name)


def test_expansion_reuses_the_models_own_value():
    cfg = _config()
    plan = load_plan(cfg)
    s = {(x.model, x.param): x for x in plan.sweeps}
    # reg_covar 0.01 is the entry's own (params); max_iter 100 the constructor's default
    assert s["gmm", "reg_covar"].points == (
        (0.001, "gmm.reg_covar0.001"),
        (0.01, "gmm"),
        (1.0, "gmm.reg_covar1.0"),
    )
    assert s["gmm", "max_iter"].own == 100
    assert s["gmm", "max_iter"].points == ((1, "gmm.max_iter1"), (100, "gmm"))
    models = plan.models
    assert set(models) == {"km", "gmm", "gmm.reg_covar0.001", "gmm.reg_covar1.0", "gmm.max_iter1"}
    v = models["gmm.reg_covar1.0"]
    assert (v.kind, v.params, v.inits, v.datasets, v.variant_of) == (
        "sklearn_gmm",
        {"reg_covar": 1.0},
        ("kmeans",),
        ("blobs",),
        "gmm",
    )
    assert models["gmm.max_iter1"].params == {"reg_covar": 0.01, "max_iter": 1}
    assert cfg["models"]["gmm"]["params"] == {"reg_covar": 0.01}  # config left untouched
    # the main table's runs are the config's entries only
    assert {r.model for r in plan.runs} == {"km", "gmm"}
    runs = plan.sweep_runs("blobs", "gmm", "reg_covar")
    assert len(runs) == 3 * 1 * 2  # values x inits x seeds
    assert {m for _, m, _, _ in runs} == {"gmm", "gmm.reg_covar0.001", "gmm.reg_covar1.0"}


def test_expansion_inherits_datasets_and_inits():
    cfg = _config()
    cfg["datasets"]["other"] = {"source": "digits"}
    cfg["models"]["gmm"].update(datasets=["other"], inits=["kmeans", "none"])
    v = load_plan(cfg).models["gmm.reg_covar1.0"]
    assert v.datasets == ("other",) and v.inits == ("kmeans", "none")


def test_sweep_restricted_to_some_datasets_and_inits():
    cfg = _config()
    cfg["datasets"]["other"] = {"source": "digits"}
    cfg["models"]["gmm"].update(inits=["kmeans", "none"])
    cfg["models"]["gmm"]["sweep"] = {
        "reg_covar": {"values": [0.01, 1.0], "datasets": ["other"], "inits": ["none"]}
    }
    plan = load_plan(cfg)
    (s,) = plan.sweeps
    assert s.datasets == ("other",) and s.inits == ("none",)
    v = plan.models["gmm.reg_covar1.0"]
    assert v.datasets == ("other",) and v.inits == ("none",)
    # the model itself still runs everywhere; the sweep reuses its runs at its own value
    assert len([r for r in plan.runs if r[1] == "gmm"]) == 2 * 2 * 2
    assert plan.sweep_runs("other", "gmm", "reg_covar") == [
        ("other", m, "none", seed) for m in ("gmm", "gmm.reg_covar1.0") for seed in (0, 1)
    ]
    cfg["models"]["gmm"]["sweep"]["reg_covar"]["inits"] = ["random"]
    with pytest.raises(ConfigError, match=r"models\.gmm\.sweep\.reg_covar\.inits: \['random'\]"):
        load_plan(cfg)


# --- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda m: m.update(sweep={"lr": [0.1]}), r"models\.gmm\.sweep: .*no parameter 'lr'"),
        (lambda m: m.update(sweep={"n_clusters": [2]}), r"models\.gmm\.sweep: .*'n_clusters'"),
        (
            lambda m: m.update(sweep={"covariance_type": [1]}),
            r"models\.gmm\.sweep\.covariance_type: only numeric",
        ),
        (lambda m: m.update(sweep={"tol": ["a"]}), r"models\.gmm\.sweep\.tol: 'a' is not a number"),
        (
            lambda m: m.update(sweep={"max_iter": [50, 20.5]}),
            r"models\.gmm\.sweep\.max_iter: 20\.5 is not an integer",
        ),
    ],
)
def test_bad_sweep_names_the_key(mutate, message):
    cfg = _config()
    mutate(cfg["models"]["gmm"])
    with pytest.raises(ConfigError, match=message):
        load_plan(cfg)


def test_variant_name_clash_is_an_error():
    cfg = _config()
    cfg["models"]["gmm.reg_covar1.0"] = {"kind": "kmeans"}
    with pytest.raises(ConfigError, match=r"models\.gmm\.sweep\.reg_covar: .*'gmm\.reg_covar1\.0'"):
        load_plan(cfg)


def test_missing_data_only_for_models_that_support_it():
    # k-means cannot take masks, so it can never be handed erased pixels by a sweep
    cfg = _config()
    cfg["models"]["km"]["sweep"] = {"erase_frac": [0.25]}
    with pytest.raises(ConfigError, match=r"models\.km\.sweep: KMeans.* no parameter 'erase_frac'"):
        load_plan(cfg)


# --- the sweep table ---------------------------------------------------------------------------


def _sweep_records():
    recs = []
    acc = {"m.lam0.1": [0.5, 0.7], "m": [0.8, 0.9], "m.lam1.0": [0.6, 0.6]}
    for model, accs in acc.items():
        for seed, a in enumerate(accs):
            for init, shift in [("kmeans", 0.0), ("spectral", -0.1)]:
                recs.append(
                    dict(
                        dataset="d",
                        model=model,
                        init=init,
                        stage="train",
                        seed=seed,
                        nmi=a + shift,
                        ari=a + shift - 0.05,
                        acc=a + shift,
                        params=10,
                        missing_frac=0.2 if model == "m.lam1.0" else 0.0,
                    )
                )
    # a model outside the sweep is ignored
    recs.append(dict(recs[0], model="other", acc=1.0, nmi=1.0, ari=1.0))
    return recs


def test_sweep_summary_and_table():
    long = tables.long_table(_sweep_records())
    values = {"m.lam0.1": 0.1, "m": 0.5, "m.lam1.0": 1.0}
    s = tables.sweep_summary(long, values, "m")
    assert list(s.method) == ["m (kmeans) TRAIN"] * 3 + ["m (spectral) TRAIN"] * 3
    assert list(s.value) == [0.1, 0.5, 1.0] * 2
    row = s[(s.method == "m (kmeans) TRAIN") & (s.value == 0.1)].iloc[0]
    assert row.acc_mean == pytest.approx(0.6) and row.n == 2
    assert row.acc_std == pytest.approx(np.std([0.5, 0.7], ddof=1))
    assert row.ari_mean == pytest.approx(0.55)
    assert s.missing_frac.tolist() == pytest.approx([0, 0, 0.2] * 2)

    cells, best = tables.sweep_cells(s, "lam")
    assert list(cells.columns) == ["method", "lam", "NMI", "ARI", "ACC", "n", "missing %"]
    assert cells.loc[1, "ACC"] == "0.850 ± 0.071" and cells.loc[1, "lam"] == "0.5"
    assert cells.loc[2, "missing %"] == "20.0"
    # best within each method: lam 0.5 for both inits, though spectral's best < kmeans's
    assert best["ACC"].tolist() == [False, True, False] * 2
    assert not best[["method", "lam", "n"]].to_numpy().any()

    md = tables.sweep_markdown(cells, best, "title")
    assert "| m (kmeans) TRAIN | 0.5 | **0.850 ± 0.071** |" in md
    tex = tables.sweep_latex(cells, best)
    assert tex.count(r"\toprule") == 1 and tex.count(r"\midrule") == 2  # header, between inits
    assert r"\textbf{0.750 $\pm$ 0.071}" in tex


def test_sweep_summary_without_records_fails():
    long = tables.long_table(_sweep_records())
    with pytest.raises(ValueError, match="no records of the swept models"):
        tables.sweep_summary(long, {"x.lam1": 1.0}, "x")


# --- end to end -------------------------------------------------------------------------------


def _tiny_sweep_config():
    cfg = load_config()
    cfg["inits"] = {"kmeans": cfg["inits"]["kmeans"]}
    cfg["tracking"] = {"enabled": False}
    cfg["models"] = {
        "gmm": {
            "kind": "sklearn_gmm",
            "params": {"covariance_type": "diag", "reg_covar": 0.01},
            "inits": ["kmeans"],
            "sweep": {"reg_covar": [0.01, 30.0]},
        },
        "mixmate": {
            "kind": "mixmate",
            "params": {
                "n_atoms": 2,
                "lam": 0.1,
                "n_epochs": 1,
                "batch_size": 64,
                "erase_prob": 0.9,
                "device": "cpu",
            },
            "inits": ["kmeans"],
            # lam's one value is the model's own: a table, no extra training
            "sweep": {"erase_frac": [0.0, 0.25], "lam": [0.1]},
        },
    }
    return cfg


@pytest.fixture(scope="module")
def sweep_run(tmp_path_factory):
    wd = tmp_path_factory.mktemp("sweep")
    run_snakemake(wd, "--cores", "2", config={**_tiny_sweep_config(), "publish_dir": "published"})
    return wd


@pytest.mark.workflow
def test_sweep_tables_end_to_end(sweep_run):
    wd = sweep_run
    t = wd / "results/tables/sweeps/blobs/gmm"
    csv = pd.read_csv(t / "reg_covar.csv")
    assert csv.method.tolist() == ["gmm (kmeans) INIT"] * 2 + ["gmm (kmeans) TRAIN"] * 2
    assert csv.reg_covar.tolist() == [0.01, 30.0] * 2 and (csv.n == 2).all()
    train = csv[csv.method == "gmm (kmeans) TRAIN"]
    # a huge covariance floor blurs the well-separated blobs
    assert train.acc_mean.iloc[0] > 0.95 and train.ari_mean.iloc[1] < 0.5
    assert "| gmm (kmeans) TRAIN | 30 |" in (t / "reg_covar.md").read_text()
    assert (t / "reg_covar.tex").read_text().count(r"\toprule") == 1
    assert (wd / "results/figures/sweeps/blobs/gmm/reg_covar.png").stat().st_size > 1000
    # what made it, under its title; its jobs summed, and apart the variant's, which no main
    # table counts (mixlib.parts adds those to a part's total)
    notes = provenance.read_notes(t / "reg_covar.md")
    assert notes["commit"] and "--replace-workflow-config --cores 2" in notes["command"]
    assert re.match(r"[0-9.]+ min summed over the 4 benchmarked jobs", notes["jobs wall time"])
    assert f"; {provenance.OWN_JOBS} " in notes["jobs wall time"]
    assert notes["jobs wall time"].endswith(" min over 2 job(s)")
    # published beside the main tables, under sweeps/<dataset>/<model>/
    pub = wd / "published/sweeps/blobs"
    assert (pub / "gmm/reg_covar.md").read_text() == (t / "reg_covar.md").read_text()
    assert {p.name for p in (pub / "mixmate").iterdir()} == {
        f"{param}.{ext}" for param in ("erase_frac", "lam") for ext in ("md", "tex", "csv", "png")
    }
    # the value equal to the model's own is the model itself: trained once
    trained = {p.name for p in (wd / "results/train/blobs").iterdir()}
    assert trained == {"gmm", "gmm.reg_covar30.0", "mixmate", "mixmate.erase_frac0.25"}
    # variants stay out of the main table and the long table
    assert "reg_covar" not in (wd / "results/tables/blobs.md").read_text()
    long = pd.read_csv(wd / "results/tables/long.csv")
    assert set(long.model) == {"init", "gmm", "mixmate"}


@pytest.mark.workflow
def test_missing_data_table_end_to_end(sweep_run):
    wd = sweep_run
    t = wd / "results/tables/sweeps/blobs/mixmate"
    csv = pd.read_csv(t / "erase_frac.csv")
    assert set(csv.method) == {"mixmate (kmeans) INIT", "mixmate (kmeans) TRAIN"}
    clean = csv[csv.erase_frac == 0.0]
    erased = csv[csv.erase_frac == 0.25]
    assert (clean.missing_frac == 0).all() and (csv.n == 2).all()
    # 90% of the 300 points lose round(0.25 * 4) = 1 of their 4 features, drawn from the seed:
    # the same masks as mixlib's erase_masks with that seed
    expected = np.mean(
        [1 - erase_masks(300, 4, 0.9, 0.25, np.random.default_rng(s)).mean() for s in (0, 1)]
    )
    assert erased.missing_frac.to_numpy() == pytest.approx(expected, abs=1e-12)
    assert 0.18 < expected < 0.27
    md = (t / "erase_frac.md").read_text()
    assert "missing %" in md and "only the labels of fully observed images" in md
    assert "erase_prob=0.9" in md  # what was erased is stated
    # the other sweep's table states the erased fraction its runs had: none
    lam = (t / "lam.md").read_text().splitlines()[0]
    assert "other params:" in lam and "erase_prob=0.9" in lam and "erase_frac=0.0" in lam
    # models without missing-data support carry no missing fraction: they see complete data
    long = pd.read_csv(wd / "results/tables/long.csv")
    assert long.loc[long.model == "gmm", "missing_frac"].isna().all()
    assert (long.loc[long.model == "mixmate", "missing_frac"] == 0).all()


@pytest.mark.workflow
def test_adding_a_value_reruns_only_its_jobs(sweep_run, tmp_path):
    cfg = _tiny_sweep_config()
    cfg["models"]["gmm"]["sweep"]["reg_covar"].append(3.0)
    p = run_snakemake(sweep_run, "-n", "--cores", "1", config=cfg)
    out = p.stdout + p.stderr
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)$", out.split("Job stats:")[1], flags=re.M))
    assert jobs == {
        "train_model": "2",
        "evaluate": "2",
        "make_sweep_table": "1",
        "all": "1",
        "total": "6",
    }
    assert "model=gmm.reg_covar3.0" in out and "param=reg_covar" in out


@pytest.mark.workflow
def test_bad_sweep_fails_before_any_job(tmp_path):
    cfg = _tiny_sweep_config()
    cfg["models"]["gmm"]["sweep"] = {"regcovar": [1.0]}
    p = run_snakemake(tmp_path, "-n", "--cores", "1", config=cfg, check=False)
    assert p.returncode != 0 and "models.gmm.sweep" in p.stdout + p.stderr
    assert not (tmp_path / "results").exists()
    bad = copy.deepcopy(_tiny_sweep_config())
    bad["models"]["gmm"]["sweep"] = {"reg_covar": []}  # the schema: at least one value
    p = run_snakemake(tmp_path, "-n", "--cores", "1", config=bad, check=False)
    assert p.returncode != 0 and "sweep" in p.stdout + p.stderr
