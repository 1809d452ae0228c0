from mixlib.pipeline import init_features, run_job

run_job(
    snakemake,
    init_features,
    torch_threads=True,  # the scattering feature runs in torch: keep it to the job's threads
    data_path=snakemake.input.data,
    dataset=snakemake.wildcards.dataset,
    recipe=snakemake.wildcards.recipe,
    spec=snakemake.params.spec,
    out_features=snakemake.output.features,
    out_record=snakemake.output.record,
)
