from mixlib.pipeline import run_job, train_model

run_job(
    snakemake,
    train_model,
    torch_threads=True,
    data_path=snakemake.input.data,
    init_path=snakemake.input.get("init"),
    pretrained_path=snakemake.input.get("pretrained"),
    kind=snakemake.params.kind,
    params=snakemake.params.hyper,
    seed=int(snakemake.wildcards.seed),
    eval_every=snakemake.params.eval_every,
    out_labels=snakemake.output.labels,
    out_info=snakemake.output.info,
    artifact_dir=snakemake.output.figures,
)
