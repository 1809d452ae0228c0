from mixlib.pipeline import pretrain_autoencoder, run_job

run_job(
    snakemake,
    pretrain_autoencoder,
    torch_threads=True,
    data_path=snakemake.input.data,
    kind=snakemake.params.kind,
    params=snakemake.params.hyper,
    seed=int(snakemake.wildcards.seed),
    out_state=snakemake.output.state,
)
