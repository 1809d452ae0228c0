from mixlib.pipeline import prepare_dataset, run_job

run_job(
    snakemake,
    prepare_dataset,
    name=snakemake.wildcards.dataset,
    spec=snakemake.params.spec,
    out_data=snakemake.output.data,
    out_meta=snakemake.output.meta,
)
