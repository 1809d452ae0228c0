from mixlib.pipeline import run_job, sweep_table
from mixlib.provenance import describe

run_job(
    snakemake,
    sweep_table,
    records=list(snakemake.input.records),
    dataset=snakemake.wildcards.dataset,
    model=snakemake.wildcards.model,
    param=snakemake.wildcards.param,
    values=snakemake.params.values,
    params=snakemake.params.fixed,
    out_md=snakemake.output.md,
    out_tex=snakemake.output.tex,
    out_csv=snakemake.output.csv,
    out_figure=snakemake.output.figure,
    provenance=describe(
        snakemake.params.invocation,
        snakemake.params.benchmarks,
        snakemake.params.train_infos,
        own=snakemake.params.own_benchmarks,
    ),
)
