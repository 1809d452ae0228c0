rule train_model:
    input:
        unpack(init_input),
        data="results/data/{dataset}.npz",
    output:
        labels="results/train/{dataset}/{model}/{init}/seed{seed}/labels.npz",
        info="results/train/{dataset}/{model}/{init}/seed{seed}/info.json",
        figures=directory("results/train/{dataset}/{model}/{init}/seed{seed}/figures"),
    params:
        kind=model_kind,
        hyper=model_params,
    log:
        "results/logs/train_model/{dataset}/{model}/{init}/seed{seed}.log",
    benchmark:
        "results/benchmarks/train_model/{dataset}/{model}/{init}/seed{seed}.tsv"
    threads: 2
    resources:
        gpu=0,
    script:
        "../workflow_scripts/train_model.py"
