rule pretrain_autoencoder:
    input:
        data="results/data/{dataset}.npz",
    output:
        state="results/pretrain/{dataset}/{recipe}/seed{seed}/autoencoder.pt",
    log:
        "results/logs/pretrain_autoencoder/{dataset}/{recipe}/seed{seed}.log",
    benchmark:
        "results/benchmarks/pretrain_autoencoder/{dataset}/{recipe}/seed{seed}.tsv"
    priority: train_priority
    threads: train_threads
    resources:
        gpu=train_gpus,
    params:
        kind=lambda wc: PLAN.pretrain_for(wc.recipe).kind,
        hyper=lambda wc: PLAN.pretrain_for(wc.recipe).params,
    script:
        "../workflow_scripts/pretrain_autoencoder.py"


rule train_model:
    input:
        unpack(init_input),
        unpack(pretrain_input),
        data="results/data/{dataset}.npz",
    output:
        labels="results/train/{dataset}/{model}/{init}/seed{seed}/labels.npz",
        info="results/train/{dataset}/{model}/{init}/seed{seed}/info.json",
        figures=report(
            directory("results/train/{dataset}/{model}/{init}/seed{seed}/figures"),
            patterns=["{name}.png"],
            caption="../config/report/train_figures.rst",
            category="Training runs",
            subcategory="{model}",
        ),
    log:
        "results/logs/train_model/{dataset}/{model}/{init}/seed{seed}.log",
    benchmark:
        "results/benchmarks/train_model/{dataset}/{model}/{init}/seed{seed}.tsv"
    priority: train_priority
    threads: train_threads
    resources:
        gpu=train_gpus,
    params:
        kind=lambda wc: model_of(wc).kind,
        hyper=lambda wc: model_of(wc).params,
        eval_every=lambda wc: model_of(wc).eval_every,
    script:
        "../workflow_scripts/train_model.py"
