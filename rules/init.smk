rule init_features:
    input:
        data="results/data/{dataset}.npz",
    output:
        features="results/features/{dataset}/{recipe}/features.npy",
        record="results/features/{dataset}/{recipe}/record.json",
    log:
        "results/logs/init_features/{dataset}/{recipe}.log",
    benchmark:
        "results/benchmarks/init_features/{dataset}/{recipe}.tsv"
    threads: 2
    params:
        spec=lambda wc: PLAN.feature_spec(wc.dataset, wc.recipe),
    script:
        "../workflow_scripts/init_features.py"


rule initialize:
    input:
        unpack(features_input),
        data="results/data/{dataset}.npz",
    output:
        labels="results/init/{dataset}/{init}/seed{seed}/labels.npy",
        record="results/init/{dataset}/{init}/seed{seed}/record.json",
    log:
        "results/logs/initialize/{dataset}/{init}/seed{seed}.log",
    benchmark:
        "results/benchmarks/initialize/{dataset}/{init}/seed{seed}.tsv"
    priority: init_priority
    threads: init_threads
    params:
        spec=lambda wc: PLAN.init_for(wc.init, wc.dataset),
    script:
        "../workflow_scripts/initialize.py"
