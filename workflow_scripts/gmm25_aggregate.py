from mixlib.pipeline import gmm25_aggregate, run_job
from mixlib.provenance import describe

run_job(
    snakemake,
    gmm25_aggregate,
    records=list(snakemake.input.records),
    out_runs=snakemake.output.runs,
    out_md=snakemake.output.md,
    out_tex=snakemake.output.tex,
    out_csv=snakemake.output.csv,
    out_figure=snakemake.output.figure,
    reference_csv=snakemake.params.reference_csv,
    published_as=snakemake.params.published_as,
    provenance=describe(snakemake.params.invocation, snakemake.params.benchmarks),
)
