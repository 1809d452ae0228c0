import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import make_blobs

from mixlib import init, tables
from mixlib.metrics import ari


def _subspaces(n=100, dim=2, ambient=20, k=3, seed=0):
    rng = np.random.default_rng(seed)
    bases = [np.linalg.qr(rng.standard_normal((ambient, dim)))[0] for _ in range(k)]
    X = np.vstack([rng.standard_normal((n, dim)) @ B.T for B in bases])
    return X, np.repeat(np.arange(k), n)


@pytest.mark.parametrize("method", ["kmeans", "spectral", "ssc", "random"])
def test_init_methods_label_subset(method):
    # blobs suit k-means and spectral; a union of subspaces is what SSC is for
    if method == "ssc":
        X, y = _subspaces()
    else:
        X, y = make_blobs(300, centers=3, n_features=10, cluster_std=0.5, random_state=0)
    lab, info = init.initialize(X, 3, method, seed=1, subset=200)
    seen = lab >= 0
    assert seen.sum() == 200 == info["n_labelled"] and set(lab[seen]) <= {0, 1, 2}
    if method != "random":
        assert ari(y[seen], lab[seen]) > 0.9
    lab2, _ = init.initialize(X, 3, method, seed=1, subset=200)
    assert np.array_equal(lab, lab2)


def test_ssc_affinity_is_symmetric_without_self_loops():
    X = np.random.default_rng(0).standard_normal((50, 8))
    W = init.ssc_affinity(init.ssc_omp(X, n_nonzero=3))
    assert (abs(W - W.T)).max() < 1e-12 and W.diagonal().max() == 0
    assert (W.getnnz(axis=1) >= 3).all()


def test_init_bad_method():
    with pytest.raises(ValueError, match="init method 'nope'"):
        init.initialize(np.zeros((5, 2)), 2, "nope", seed=0)


def _records():
    recs = []
    for seed, (a, b) in enumerate([(0.5, 0.7), (0.6, 0.9)]):
        for model, acc in [("kmeans", a), ("mixmate", b)]:
            recs.append(
                dict(
                    dataset="d",
                    model=model,
                    init="none",
                    stage="train",
                    seed=seed,
                    nmi=acc,
                    ari=acc,
                    acc=acc,
                    params=10,
                )
            )
    return recs


def test_summary_and_paper_table_bold_best():
    long = tables.long_table(_records())
    s = tables.summarise(long)
    row = s[(s.method == "mixmate TRAIN") & (s.metric == "acc")].iloc[0]
    assert row["mean"] == pytest.approx(0.8) and row["n"] == 2
    assert row["std"] == pytest.approx(np.std([0.7, 0.9], ddof=1))
    cells, best = tables.paper_table(s, "d")
    assert cells.loc["mixmate TRAIN", "ACC"] == "0.800 ± 0.141 (n=2)"
    assert best.loc["mixmate TRAIN", "ACC"] and not best.loc["kmeans TRAIN", "ACC"]
    md = tables.to_markdown(cells, best)
    assert "**0.800 ± 0.141 (n=2)**" in md
    tex = tables.to_latex(cells, best)
    assert r"\toprule" in tex and r"\textbf{0.800 $\pm$ 0.141 (n=2)}" in tex


def test_published_values_join(tmp_path):
    ref = tmp_path / "ref.csv"
    pd.DataFrame(
        {
            "source": ["x"],
            "dataset": ["d"],
            "method": ["DEC"],
            "stage": [None],
            "metric": ["acc"],
            "mean": [0.95],
            "std": [None],
            "note": [""],
        }
    ).to_csv(ref)
    s = tables.summarise(tables.long_table(_records()))
    cells, best = tables.paper_table(s, "d", tables.published_for(ref, "d"))
    assert cells.loc["DEC [published]", "ACC"] == "0.950" and best.loc["DEC [published]", "ACC"]


def test_model_specs_read_statically_match_the_imported_classes():
    """The workflow checks configs against constructor signatures read from the model files
    without importing torch or scikit-learn; they must equal the real signatures."""
    import inspect
    import subprocess
    import sys
    from pathlib import Path

    from mixlib.models import _static_specs, available_models, get_model_class

    static = _static_specs()
    assert set(static) == set(available_models())
    for kind, spec in static.items():
        cls = get_model_class(kind)
        real = {k: p.default for k, p in inspect.signature(cls.__init__).parameters.items()}
        real.pop("self")
        assert {k: p.default for k, p in spec.parameters.items()} == real, kind
        assert spec.class_name == cls.__name__
        # every parameter is constrained, and the literal read equals the class attribute
        assert spec.constraints == cls._parameter_constraints and set(spec.constraints) == set(
            real
        ), kind
    # checking a config imports neither torch nor scikit-learn
    code = (
        "import sys, yaml; from mixlib.plan import load_plan; "
        "load_plan(yaml.safe_load(open('config/paper.yaml'))); "
        "print(sorted(m for m in ('torch', 'sklearn') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert out.stdout.strip() == "[]"
