from mixlib.pipeline import gmm25_simulation, run_job

spec = snakemake.params.spec
run_job(
    snakemake,
    gmm25_simulation,
    seed=int(snakemake.wildcards.seed),
    method=snakemake.wildcards.method,
    n_iter=int(spec["n_iter"]),
    n_inner=int(spec["n_inner"]),
    reg_covar=float(spec["reg_covar"]),
    n_train=int(spec["n_train"]),
    n_test=int(spec["n_test"]),
    n_threads=int(snakemake.threads),
    out_record=snakemake.output.record,
)
