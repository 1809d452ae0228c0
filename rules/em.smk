# Gaussian-mixture experiments (issue 4), each optional under `experiments` in the config:
# the GMM-on-images exercise per dataset, and the BigLearn-EM 25-component simulation per
# method and seed, then its table and figure.


rule prepare_em_dataset:
    input:
        unpack(em_raw_input),
    output:
        data="results/em/data/{dataset}.npz",
        meta="results/em/data/{dataset}.json",
    log:
        "results/logs/prepare_em_dataset/{dataset}.log",
    benchmark:
        "results/benchmarks/prepare_em_dataset/{dataset}.tsv"
    threads: 1
    params:
        spec=em_dataset_spec,
        file_sha256=lambda wc: file_sha256(em_dataset_spec(wc)["source"]),
    script:
        "../workflow_scripts/prepare_dataset.py"


rule gmm_exercise:
    input:
        data="results/em/data/{dataset}.npz",
    output:
        curves="results/em/gmm_exercise/{dataset}/loglik_curves.csv",
        final="results/em/gmm_exercise/{dataset}/loglik_final.csv",
        loglik_figure=report(
            "results/em/gmm_exercise/{dataset}/loglik.png",
            caption="../config/report/em_loglik.rst",
            category="Gaussian-mixture EM",
            subcategory="{dataset}",
        ),
        samples_figure=report(
            "results/em/gmm_exercise/{dataset}/samples.png",
            caption="../config/report/em_samples.rst",
            category="Gaussian-mixture EM",
            subcategory="{dataset}",
        ),
        summary="results/em/gmm_exercise/{dataset}/summary.md",
    log:
        "results/logs/gmm_exercise/{dataset}.log",
    benchmark:
        "results/benchmarks/gmm_exercise/{dataset}.tsv"
    threads: 2
    params:
        inits=lambda wc: GMM_EXERCISE.inits,
        seeds=lambda wc: GMM_EXERCISE.seeds,
        hyper=lambda wc: GMM_EXERCISE.params,
        n_samples=lambda wc: GMM_EXERCISE.n_samples,
        invocation=INVOCATION,
    script:
        "../workflow_scripts/gmm_exercise.py"


rule gmm25_simulation:
    output:
        record="results/em/gmm25/{method}/seed{seed}.json",
    log:
        "results/logs/gmm25_simulation/{method}/seed{seed}.log",
    benchmark:
        "results/benchmarks/gmm25_simulation/{method}/seed{seed}.tsv"
    threads: 1
    params:
        spec=lambda wc: GMM25.settings,
    script:
        "../workflow_scripts/gmm25_simulation.py"


rule gmm25_aggregate:
    input:
        records=gmm25_records() if GMM25 else [],
    output:
        md="results/em/gmm25/table.md",
        tex="results/em/gmm25/table.tex",
        csv="results/em/gmm25/table.csv",
        runs="results/em/gmm25/runs.csv",
        figure=report(
            "results/em/gmm25/kl_history.png",
            caption="../config/report/em_gmm25_kl.rst",
            category="Gaussian-mixture EM",
            subcategory="BigLearn-EM simulation",
        ),
    log:
        "results/logs/gmm25_aggregate/gmm25_aggregate.log",
    benchmark:
        "results/benchmarks/gmm25_aggregate/gmm25_aggregate.tsv"
    threads: 1
    params:
        reference_csv=reference_csv(),
        published_as=GMM25.published_as if GMM25 else None,
        invocation=INVOCATION,
        benchmarks=[
            str(rules.gmm25_simulation.benchmark).format(method=m, seed=s)
            for m, s in (GMM25.runs() if GMM25 else [])
        ],
    script:
        "../workflow_scripts/gmm25_aggregate.py"
