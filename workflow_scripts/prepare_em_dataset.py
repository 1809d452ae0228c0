from pathlib import Path

from mixlib.pipeline import prepare_dataset, run_job

run_job(
    snakemake,
    prepare_dataset,
    name=snakemake.wildcards.dataset,
    spec=snakemake.params.spec,
    out_data=snakemake.output.data,
    out_meta=snakemake.output.meta,
    raw_dir=str(Path(snakemake.input.raw).parent) if "raw" in snakemake.input.keys() else None,
    file_sha256=dict(snakemake.params.file_sha256),
)
