rule prepare_dataset:
    output:
        data="results/data/{dataset}.npz",
        meta="results/data/{dataset}.json",
    params:
        spec=lambda wc: config["datasets"][wc.dataset],
    log:
        "results/logs/prepare_dataset/{dataset}.log",
    benchmark:
        "results/benchmarks/prepare_dataset/{dataset}.tsv"
    threads: 1
    script:
        "../workflow_scripts/prepare_dataset.py"
