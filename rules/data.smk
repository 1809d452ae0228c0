# Raw files of the downloadable sources, then one prepared .npz per dataset. Downloads run on
# the submitting machine (cluster compute nodes are often offline); embedded sources (digits,
# mnist5k, synthetic, npz) need no download job.


localrules:
    download_dataset,


rule download_dataset:
    input:
        staged=staged_files,
    output:
        raw=directory("results/raw/{source}"),
    log:
        "results/logs/download_dataset/{source}.log",
    benchmark:
        "results/benchmarks/download_dataset/{source}.tsv"
    threads: 1
    params:
        staged_sha256=staged_sha256,
        staged_dir=PLAN.data_dir,
        download=PLAN.download,
        file_sha256=lambda wc: file_sha256(wc.source),
    script:
        "../workflow_scripts/download_dataset.py"


rule prepare_dataset:
    input:
        unpack(raw_input),
    output:
        data="results/data/{dataset}.npz",
        meta="results/data/{dataset}.json",
    log:
        "results/logs/prepare_dataset/{dataset}.log",
    benchmark:
        "results/benchmarks/prepare_dataset/{dataset}.tsv"
    threads: 1
    params:
        spec=lambda wc: PLAN.datasets[wc.dataset],
        file_sha256=lambda wc: file_sha256(PLAN.remote_source(wc.dataset)),
    script:
        "../workflow_scripts/prepare_dataset.py"
