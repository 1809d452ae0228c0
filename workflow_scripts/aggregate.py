from mixlib.pipeline import aggregate, run_job
from mixlib.provenance import describe

run_job(
    snakemake,
    aggregate,
    records=list(snakemake.input.records),
    datasets=snakemake.params.datasets,
    out_long=snakemake.output.long,
    out_summary=snakemake.output.summary,
    tables_out=snakemake.params.tables,
    figures_out=snakemake.params.figures,
    paper_out=list(snakemake.output.paper),
    reference_csv=snakemake.params.reference_csv,
    provenance=describe(
        snakemake.params.invocation, snakemake.params.benchmarks, snakemake.params.train_infos
    ),
)
