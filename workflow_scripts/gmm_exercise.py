from mixlib.pipeline import gmm_exercise, run_job

run_job(
    snakemake,
    gmm_exercise,
    torch_threads=True,
    data_path=snakemake.input.data,
    dataset=snakemake.wildcards.dataset,
    inits=list(snakemake.params.inits),
    seeds=[int(s) for s in snakemake.params.seeds],
    params=dict(snakemake.params.hyper),
    n_samples=int(snakemake.params.n_samples),
    out_curves=snakemake.output.curves,
    out_final=snakemake.output.final,
    out_loglik_figure=snakemake.output.loglik_figure,
    out_samples_figure=snakemake.output.samples_figure,
    out_summary=snakemake.output.summary,
    invocation=snakemake.params.invocation,
)
