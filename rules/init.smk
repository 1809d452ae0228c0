rule initialize:
    input:
        data="results/data/{dataset}.npz",
    output:
        labels="results/init/{dataset}/{init}/seed{seed}/labels.npy",
        record="results/init/{dataset}/{init}/seed{seed}/record.json",
    log:
        "results/logs/initialize/{dataset}/{init}/seed{seed}.log",
    benchmark:
        "results/benchmarks/initialize/{dataset}/{init}/seed{seed}.tsv"
    threads: init_threads
    params:
        spec=lambda wc: PLAN.init_for(wc.init, wc.dataset),
    script:
        "../workflow_scripts/initialize.py"
