from mixlib.pipeline import evaluate, run_job

run_job(
    snakemake,
    evaluate,
    data_path=snakemake.input.data,
    labels_path=snakemake.input.labels,
    info_path=snakemake.input.info,
    dataset=snakemake.wildcards.dataset,
    model=snakemake.wildcards.model,
    init=snakemake.wildcards.init,
    seed=int(snakemake.wildcards.seed),
    mean_of_last=snakemake.params.mean_of_last,
    out_record=snakemake.output.record,
)
