from pathlib import Path

from mixlib.pipeline import gmm25_aggregate, run_job

run_job(
    snakemake,
    gmm25_aggregate,
    records=list(snakemake.input.records),
    out_runs=snakemake.output.runs,
    table_stem=str(Path(snakemake.output.md).with_suffix("")),
    out_figure=snakemake.output.figure,
    reference_csv=snakemake.params.reference_csv,
    published_as=snakemake.params.published_as,
)
