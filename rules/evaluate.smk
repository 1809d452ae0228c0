rule evaluate:
    input:
        data="results/data/{dataset}.npz",
        labels="results/train/{dataset}/{model}/{init}/seed{seed}/labels.npz",
        info="results/train/{dataset}/{model}/{init}/seed{seed}/info.json",
    output:
        record="results/eval/{dataset}/{model}/{init}/seed{seed}.json",
    log:
        "results/logs/evaluate/{dataset}/{model}/{init}/seed{seed}.log",
    threads: 1
    params:
        mean_of_last=lambda wc: model_of(wc).mean_of_last,
    script:
        "../workflow_scripts/evaluate.py"
