# The plan of the config (checked once, by mixlib.plan), wildcard constraints, every output path
# pattern and every input/param function. No rules here; nothing below checks the config again.
import os
from pathlib import Path

from mixlib.download import SOURCES, verify
from mixlib.models import schedule_priority, uses_gpu
from mixlib.plan import load_plan

PLAN = load_plan(config)


wildcard_constraints:
    dataset="[A-Za-z0-9_.-]+",
    model="[A-Za-z0-9_.-]+",
    init="[A-Za-z0-9_.-]+",
    seed=r"\d+",
    source="[A-Za-z0-9_]+",
    method="[a-z_]+",
    param="[A-Za-z_][A-Za-z0-9_]*",


DATASETS = list(PLAN.datasets)
SEEDS = PLAN.seeds
TABLE_EXTS = ("md", "tex", "csv")
INVOCATION = "results/provenance/invocation.json"
PAPER_TABLE = [f"results/tables/paper.{ext}" for ext in TABLE_EXTS]
EVAL_RECORD = "results/eval/{dataset}/{model}/{init}/seed{seed}.json"
INIT_RECORD = "results/init/{dataset}/{init}/seed{seed}/record.json"


def reference_csv():
    """The published numbers' CSV (a relative config path is taken from the repository),
    written relative to the working directory so that no absolute path of this machine lands in
    the jobs' params and the HTML report."""
    path = PLAN.reference_csv
    if not path:
        return None
    if not os.path.isabs(path):
        path = os.path.join(workflow.basedir, path)
    return os.path.relpath(path)


def init_records():
    """The init stage's records for every (dataset, init) some model starts from."""
    return [
        INIT_RECORD.format(dataset=d, init=i, seed=s) for d, i, s in PLAN.init_runs()
    ]


def eval_records():
    return [EVAL_RECORD.format(**r._asdict()) for r in PLAN.runs]


def dataset_tables():
    """{dataset: [md, tex, csv]} of the per-dataset tables."""
    return {d: [f"results/tables/{d}.{ext}" for ext in TABLE_EXTS] for d in DATASETS}


def table_outputs():
    return [p for paths in dataset_tables().values() for p in paths]


def dataset_figures():
    return {d: f"results/figures/{d}_metrics.png" for d in DATASETS}


def figure_outputs():
    return list(dataset_figures().values())


def job_benchmarks():
    """Benchmark files of the jobs behind the tables (data, shared features, inits, shared
    pre-training, training), from the rules' own benchmark patterns (call after those rules
    are defined)."""
    prepare, features, init, pretrain, train = (
        str(r.benchmark)
        for r in (
            rules.prepare_dataset,
            rules.init_features,
            rules.initialize,
            rules.pretrain_autoencoder,
            rules.train_model,
        )
    )
    return [
        *(prepare.format(dataset=d) for d in DATASETS),
        *(features.format(dataset=d, recipe=r) for d, r in PLAN.feature_runs()),
        *(init.format(dataset=d, init=i, seed=s) for d, i, s in PLAN.init_runs()),
        *(
            pretrain.format(dataset=d, recipe=r, seed=s)
            for d, r, s in PLAN.pretrain_runs()
        ),
        *(train.format(**r._asdict()) for r in PLAN.runs),
    ]


def train_infos():
    """The training jobs' info.json files: a resumed job's records the saved work of
    earlier attempts, which its benchmark file misses (call after train_model)."""
    info = str(rules.train_model.output.info)
    return [info.format(**r._asdict()) for r in PLAN.runs]


def clustering_outputs():
    """The clustering tables and figures (none for a config of experiments only)."""
    if not PLAN.runs:
        return []
    return [
        "results/tables/long.csv",
        "results/tables/summary.csv",
        *table_outputs(),
        *figure_outputs(),
        *PAPER_TABLE,
    ]


def publish_map():
    """{copy under publish_dir: the output it copies}: the clustering tables and figures flat,
    the sweeps' tables and figures under sweeps/<dataset>/<model>/ (e.g. the λ sweep and the
    missing-pixel table), the experiments' under their own folders (e.g.
    <publish_dir>/gmm25/table.md); none when publish_dir is null."""
    if not PLAN.publish_dir:
        return {}
    flat = [p for p in clustering_outputs() if not p.endswith("summary.csv")]
    out = {f"{PLAN.publish_dir}/{Path(p).name}": p for p in flat}
    # results/{tables,figures}/sweeps/<dataset>/<model>/<param>.* -> sweeps/<dataset>/...
    for p in sweep_outputs():
        out[f"{PLAN.publish_dir}/{Path(p).relative_to(Path(p).parents[3])}"] = p
    for p in [*gmm25_outputs(), *gmm_exercise_outputs()]:
        out[f"{PLAN.publish_dir}/{Path(p).relative_to('results/em')}"] = p
    return out


GMM_EXERCISE = PLAN.gmm_exercise
GMM25 = PLAN.gmm25


def gmm_exercise_outputs():
    """The exercise's figures and tables per dataset; none without experiments.gmm_exercise."""
    if not GMM_EXERCISE:
        return []
    files = (
        "loglik.png",
        "samples.png",
        "loglik_curves.csv",
        "loglik_final.csv",
        "summary.md",
    )
    return [
        f"results/em/gmm_exercise/{d}/{f}" for d in GMM_EXERCISE.datasets for f in files
    ]


def gmm25_records():
    return [f"results/em/gmm25/{m}/seed{s}.json" for m, s in GMM25.runs()]


def gmm25_outputs():
    """The simulation's table, per-seed CSV and figure; none without experiments.gmm25."""
    if not GMM25:
        return []
    return [
        *(f"results/em/gmm25/table.{ext}" for ext in TABLE_EXTS),
        "results/em/gmm25/runs.csv",
        "results/em/gmm25/kl_history.png",
    ]


def em_dataset_spec(wildcards):
    return GMM_EXERCISE.datasets[wildcards.dataset]


def em_raw_input(wildcards):
    """The raw files of an exercise dataset's downloadable source; none if embedded."""
    source = em_dataset_spec(wildcards)["source"]
    return {"raw": f"results/raw/{source}"} if source in SOURCES else {}


def all_outputs():
    return [
        *clustering_outputs(),
        *publish_map(),
        *gmm_exercise_outputs(),
        *gmm25_outputs(),
        *sweep_outputs(),
    ]


def init_input(wildcards):
    if wildcards.init == "none":
        return {}
    return {
        "init": f"results/init/{wildcards.dataset}/{wildcards.init}/seed{wildcards.seed}/labels.npy"
    }


def features_input(wildcards):
    """The feature an init clusters, when one init_features job computes it for every seed."""
    recipe = PLAN.feature_recipe(wildcards.init, wildcards.dataset)
    if recipe is None:
        return {}
    return {"features": f"results/features/{wildcards.dataset}/{recipe}/features.npy"}


def pretrain_input(wildcards):
    """The shared pre-trained auto-encoder a model starts from (DEC, IDEC), if any."""
    recipe = model_of(wildcards).pretrain
    if recipe is None:
        return {}
    d, s = wildcards.dataset, wildcards.seed
    return {"pretrained": f"results/pretrain/{d}/{recipe}/seed{s}/autoencoder.pt"}


def raw_input(wildcards):
    """The raw files of a downloadable source (the download_dataset output); none if embedded."""
    source = PLAN.remote_source(wildcards.dataset)
    return {"raw": f"results/raw/{source}"} if source else {}


def _staged_paths(source):
    if not PLAN.data_dir:
        return []
    root = Path(PLAN.data_dir) / source
    return [p for p in (root / f.name for f in SOURCES[source].files) if p.is_file()]


def staged_files(wildcards):
    """Files staged for this source under data_dir, as ``ancient`` inputs: the same files
    copied again (new modification times, as a re-staged directory has) rerun nothing, while
    a file replaced by other content reruns the download job through its param
    :func:`staged_sha256`."""
    return [ancient(str(p)) for p in _staged_paths(wildcards.source)]


def staged_sha256(wildcards):
    """{file name: sha256} of the files staged for this source (a param of download_dataset:
    Snakemake reruns a job whose params changed)."""
    return {p.name: verify(p, "sha256", None) for p in _staged_paths(wildcards.source)}


def file_sha256(source):
    return PLAN.file_sha256.get(source, {}) if source else {}


def model_of(wildcards):
    return PLAN.models[wildcards.model]


def sweep_outputs():
    """Per sweep and dataset of its model: a table (md, tex, csv) and a figure."""
    out = []
    for s in PLAN.sweeps:
        for d in s.datasets:
            stem = f"{d}/{s.model}/{s.param}"
            out += [f"results/tables/sweeps/{stem}.{ext}" for ext in TABLE_EXTS]
            out.append(f"results/figures/sweeps/{stem}.png")
    return out


def sweep_records(wildcards):
    return [
        EVAL_RECORD.format(**r._asdict())
        for r in PLAN.sweep_runs(wildcards.dataset, wildcards.model, wildcards.param)
    ]


def sweep_benchmarks(wildcards):
    """Benchmark files of the sweep's training jobs (call after train_model)."""
    bench = str(rules.train_model.benchmark)
    return [
        bench.format(**r._asdict())
        for r in PLAN.sweep_runs(wildcards.dataset, wildcards.model, wildcards.param)
    ]


def sweep_own_benchmarks(wildcards):
    """Those of its points that no main table runs (their variants): a part's total counts them
    here, and the others under the main tables."""
    main = {str(rules.train_model.benchmark).format(**r._asdict()) for r in PLAN.runs}
    return [b for b in sweep_benchmarks(wildcards) if b not in main]


def sweep_infos(wildcards):
    info = str(rules.train_model.output.info)
    return [
        info.format(**r._asdict())
        for r in PLAN.sweep_runs(wildcards.dataset, wildcards.model, wildcards.param)
    ]


def sweep_fixed(wildcards):
    """The params a sweep's title states: the model's own from the config, and the model's
    value of each parameter its other sweeps vary (the lambda sweep says erase_frac=0.0 beside
    the config's erase_prob, so no reader takes its images for erased)."""
    fixed = dict(model_of(wildcards).params)
    for s in PLAN.sweeps:
        if s.model == wildcards.model and s.param != wildcards.param:
            fixed.setdefault(s.param, s.own)
    return fixed


def sweep_values(wildcards):
    """{model name: swept value} of the sweep's points."""
    return {
        name: value
        for value, name in PLAN.sweep(wildcards.model, wildcards.param).points
    }


def init_threads(wildcards):
    """2 threads for the inits that run torch and BLAS on many points (a scattering feature of
    their own, a graph or SSC over every point), else 1."""
    spec = PLAN.init_for(wildcards.init, wildcards.dataset)
    own_scattering = spec["feature"] == "scattering" and not features_input(wildcards)
    heavy = own_scattering or (
        spec["method"] in ("spectral", "ssc") and not spec["subset"]
    )
    return 2 if heavy else 1


def torch_job_model(wildcards):
    """The model a training job fits, or whose auto-encoder a pre-training job trains."""
    if hasattr(wildcards, "recipe"):
        return PLAN.pretrain_for(wildcards.recipe)
    return model_of(wildcards)


def train_threads(wildcards):
    """2 threads for the models whose fit (or pre-training) is dominated by multithreaded
    torch maths, else 1: on a small machine the others spend most of their time importing
    and writing, which two one-thread jobs side by side do better than one two-thread
    job."""
    m = torch_job_model(wildcards)
    return 2 if uses_gpu(m.kind, m.params) else 1


def train_priority(wildcards):
    """The long jobs first (the auto-encoder models' training and pre-training, MixMate with
    missing pixels: ~10x the others on 70k): ``mixlib.models.schedule_priority``."""
    m = torch_job_model(wildcards)
    return schedule_priority(m.kind, m.params)


def init_priority(wildcards):
    """An init inherits the highest priority of the training jobs that start from it (the
    k-means init of MixMate with missing pixels), so a long job does not wait for its init
    behind the short jobs that are ready at the start."""
    return max(
        (
            schedule_priority(m.kind, m.params)
            for m in PLAN.models.values()
            if wildcards.init in m.inits and wildcards.dataset in m.datasets
        ),
        default=0,
    )


def train_gpus(wildcards):
    """1 for the models that run on a GPU when there is one (the torch models), else 0: on
    SLURM these training (and pre-training) jobs ask for ``--gpus=1`` and land on the GPU
    partition."""
    m = torch_job_model(wildcards)
    return int(uses_gpu(m.kind, m.params))
