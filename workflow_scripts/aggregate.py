from mixlib.pipeline import aggregate, run_job

run_job(
    snakemake,
    aggregate,
    records=list(snakemake.input.records),
    datasets=snakemake.params.datasets,
    out_long=snakemake.output.long,
    out_summary=snakemake.output.summary,
    table_dir="results/tables",
    figure_dir="results/figures",
    reference_csv=snakemake.params.reference_csv,
)
