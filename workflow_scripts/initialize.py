from mixlib.pipeline import initialize, run_job

run_job(
    snakemake,
    initialize,
    torch_threads=True,  # the scattering feature runs in torch: keep it to the job's threads
    data_path=snakemake.input.data,
    dataset=snakemake.wildcards.dataset,
    init=snakemake.wildcards.init,
    spec=snakemake.params.spec,
    seed=int(snakemake.wildcards.seed),
    out_labels=snakemake.output.labels,
    out_record=snakemake.output.record,
    features_path=snakemake.input.get("features"),
)
